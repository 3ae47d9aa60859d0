"""The live charts' view inside the panel: the chart image, the status line and the sweep's table,
drawn from the training thread through widget values (never ``with output:`` from a thread)."""

from __future__ import annotations

import html
import threading
from typing import Any

from .routing import OWNERS


class WidgetView:
    """A LiveChart or SweepChart view drawing into the panel's chart, status line and sweep table,
    from the training thread.

    The thread drawing here is the panel's: its warnings show in the panel too. ``note`` (what
    the run trains: a fresh adapter, or which one it continues) heads the status line.

    Example:
        >>> from lora_nb.notebook.live import LiveChart
        >>> chart = LiveChart(view=WidgetView(panel))  # a panel's run draws into it  # doctest: +SKIP
    """

    def __init__(self, panel: Any) -> None:  # the Panel (not imported: it imports this module)
        self.panel, self.note, self.drawn = panel, "", False
        self._lock = threading.Lock()

    def show(self, png: bytes, status: str, table: str = "") -> None:
        """Draw a chart (a run's dashboard, a sweep's overlay) at its own size; ``table``: a sweep's points."""
        if threading.current_thread() is not threading.main_thread():  # never claim the cells' thread for good
            OWNERS[threading.current_thread()] = self.panel
        if png:
            self.panel.chart.value = png
            self.panel.chart.layout.width = f"{int.from_bytes(png[16:20], 'big')}px"  # the PNG header's width: crisp
            self.panel.chart.layout.display = ""
        if table:
            self.panel.sweep_table.value = f"<div class='lora-nb-scroll'>{table}</div>"
        with self._lock:
            self.drawn = True
            self.panel.status.value = self._noted(status)

    def announce(self, status: str) -> None:
        """Show ``status`` unless the run has drawn already: a short run may even have finished."""
        with self._lock:
            if not self.drawn:
                self.panel.status.value = self._noted(status)

    def _noted(self, status: str) -> str:
        return f"{html.escape(self.note)}<br>{status}" if self.note else status
