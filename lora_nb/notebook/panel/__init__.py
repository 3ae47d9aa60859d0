"""The widget panel: a recipe as controls in tabs — Model · Adapter · Data · Train · Runs · Export —
under a status bar with Stop and Save now that every tab shares.

Train runs the controls as a recipe through ``lora_nb.run`` on the loaded base (a fresh adapter
each time: change a control, press Train again, compare the runs), or, with "continue from the
current adapter" ticked, trains the adapter the model already has (``Session.train``, like
``%lora train``). Either way training runs in a background thread, so the kernel stays idle and
Stop's click is handled. Sweep trains one fresh adapter per value of one or two settings (with
the other settings as the controls say) through ``lora_nb.sweep``, in the background too: one
overlaid chart, the status line naming the point in training, the table of points with the best
marked; Stop ends it after the current step, keeping the finished points. Everything the thread
shows goes through widget values (the chart image, the status line, the table, the warnings),
never ``with output:`` from the thread; the warnings raised in the panel's actions and in its
training thread show in the panel rather than in JupyterLab's log console (where a background
thread's stderr would go).

Modules: ``shell`` (``Panel``: the status bar, the tabs, the actions' guard), one per tab group
(``setup_tabs``: Model, Adapter, Data; ``train_tab``; ``result_tabs``: Runs, Export), ``view``
(``WidgetView``: the live charts drawing into the panel), ``routing`` (warnings by thread) and
``widgets`` (what the tabs share).
"""

from __future__ import annotations

from .shell import Panel
from .train_tab import sweep_values
from .view import WidgetView

__all__ = ["Panel", "WidgetView", "sweep_values"]
