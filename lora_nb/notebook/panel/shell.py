"""The panel itself: the status bar with Stop and Save now that every tab shares, the warnings, the
tabs (each made by its part: :mod:`.setup_tabs`, :mod:`.train_tab`, :mod:`.result_tabs`), the
controls as a recipe, and the buttons' actions guarded so an error shows in the panel."""

from __future__ import annotations

import dataclasses
import html
import threading
import traceback
from typing import Any, Callable, Optional

import ipywidgets as w

from ...core.errors import ConfigError, strict_flags
from ...experiments.sweeps.sweep import Sweep
from ...hf.trackers import trackers
from ...recipe.schema import Recipe
from ..session import Session
from .result_tabs import ExportTab, RunsTab
from .routing import OWNERS, route_warnings
from .setup_tabs import AdapterTab, DataTab, ModelTab
from .train_tab import TrainTab
from .widgets import BUTTONS, CSS, ERROR, RANKS, TABS, WARN, fitted


class Panel(ModelTab, AdapterTab, DataTab, TrainTab, RunsTab, ExportTab, w.VBox):
    """Controls for a recipe on the session's model, in tabs, with the live chart in the Train tab.

    Example:
        >>> Panel()          # in a notebook cell; or %lora panel       # doctest: +SKIP
    """

    def __init__(self, session: Optional[Session] = None, model: str = "", data: str = "") -> None:
        self.session = s = session or Session()
        self.warned: list[str] = []
        self.buttons = {name: w.Button(description=name, layout=fitted()) for name in BUTTONS}
        self.buttons["Train"].button_style = "success"
        self.buttons["Stop"].button_style = "danger"
        self.status = w.HTML(layout=w.Layout(margin="0 0 0 1em"))
        self.warnings = w.HTML()
        pages = [self.model_page(model), self.adapter_page(), self.data_page(data), self.train_page(),
                 self.runs_page(), self.export_page()]
        actions = {"Load": self.load, "Preview": self.preview, "Train": self.train, "Sweep": self.sweep,
                   "Stop": self.stop, "Save now": self.save_now, "Generate": self.generate, "Compare": self.compare,
                   "Export code": self.export, "Save to file": self.save_script,
                   "Push to Hub": self.push, "Resume": self.resume, "Load adapter": self.load_run_adapter}
        for name, fn in actions.items():
            self.buttons[name].on_click(self._guarded(fn))
        self.tabs = w.Tab(children=pages)
        for i, title in enumerate(TABS):
            self.tabs.set_title(i, title)
        super().__init__([
            w.HTML(CSS + "<b>lora_nb</b> — change a setting, press Train (or Sweep a few values), compare the runs"),
            w.HBox([self.buttons["Stop"], self.buttons["Save now"], self.status]), self.warnings, self.tabs,
        ], layout=w.Layout(width="auto"))
        self.add_class("lora-nb-panel")
        route_warnings()
        if s.runs and s.runs[-1].recipe is not None:
            self.prefill(s.runs[-1].recipe)
        if s.model is not None:
            self.show_targets()
        else:
            self.update_params()
        self.tabs.selected_index = TABS.index("Train" if s.model is not None else "Model")
        self.show_runs()
        self.running_controls()

    def prefill(self, recipe: Any) -> None:
        """Start from a run's settings, so the next experiment changes one thing at a time."""
        lora, train, data = recipe.lora, recipe.train, recipe.data
        self.r.options = sorted(set(RANKS) | {lora.r})
        self.r.value, self.alpha.value = lora.r, lora.alpha
        self.dropout.value, self.variant.value = lora.dropout, lora.variant
        self.data.value, self.format.value = self.data.value or data.path, data.format or ""
        self.given_columns = data.columns if self.data.value == data.path else None
        self.train_on.value = data.train_on or ""
        self.eval.value = "" if data.eval is None else str(data.eval)
        self.lr.value, self.batch_size.value, self.max_length.value = train.lr, train.batch_size, train.max_length
        self.steps.value, self.epochs.value = train.steps or self.steps.value, train.epochs or 0
        self.eval_steps.value = train.eval_steps or 0
        self.patience.value = (train.early_stopping or {}).get("patience", 0)
        tracker = ",".join(trackers(train.report_to)) or "none"  # a list shows as one choice: trackio,tensorboard
        self.tracker.options = list(dict.fromkeys([*self.tracker.options, tracker]))
        self.tracker.value = tracker
        self.mirror.value = train.mirror or ""

    @strict_flags
    def recipe(self, fresh: bool = True) -> Recipe:
        """The controls as a recipe: validated, recorded and exported like any other (0 and empty: the default)."""
        raw = {"model": dataclasses.asdict(self.session.model_section),
               "data": dict(path=self.data.value.strip(), format=self.format.value or None,
                            eval=self.eval.value.strip() or None, columns=self.columns(),
                            train_on=self.train_on.value or None),
               "train": dict(steps=self.steps.value or None, epochs=self.epochs.value or None, lr=self.lr.value,
                             batch_size=self.batch_size.value, max_length=self.max_length.value,
                             eval_steps=self.eval_steps.value or None, early_stopping=self.patience.value or None)}
        raw["train"]["report_to"] = self.tracker.value
        raw["train"]["mirror"] = self.mirror.value.strip() or None
        if fresh:
            raw["lora"] = dict(r=self.r.value, alpha=self.alpha.value, dropout=self.dropout.value,
                               targets=self.targets(), variant=self.variant.value)
        return Recipe.from_dict(raw)

    # --- the status bar's actions (each runs in the kernel's widget-message handler: keep them short) ---

    def stop(self) -> None:
        self.session.stop()

    @strict_flags
    def running_controls(self, running: Optional[bool] = None) -> None:
        """Stop and Save now are enabled while a run or a sweep trains in the background, greyed out
        otherwise. ``running``: what the caller knows (a run's on_done callback runs in its still-alive
        thread); None asks the session."""
        if running is None:
            active = self.session.active
            running = active is not None and active.running
        self.buttons["Stop"].disabled = self.buttons["Save now"].disabled = not running

    def save_now(self) -> None:
        active = self.session.active
        if active is None or not active.running:
            raise ConfigError("save now", problem="no run is training")
        if isinstance(active, Sweep):  # the point in training
            active = next((p.run for p in active.points if p.status == "running" and p.run is not None), None)
            if active is None:
                raise ConfigError("save now", problem="the sweep's next point has not started training yet")
        active.save_now()

    # --- plumbing -------------------------------------------------------------------------------

    @strict_flags
    def say(self, message: str, error: bool = False) -> None:
        color = ERROR if error else "#333"
        self.status.value = f"<span style='color:{color}'>{message}</span>"

    def warn(self, category: type, message: Any) -> None:
        """Show a warning in the panel (the latest five, each once)."""
        line = f"{category.__name__}: {message}"
        if line not in self.warned:
            self.warned.append(line)
        earlier = f"<div>… and {len(self.warned) - 5} earlier</div>" if len(self.warned) > 5 else ""
        self.warnings.value = earlier + "".join(f"<div style='color:{WARN}'>⚠ {html.escape(text)}</div>"
                                                for text in self.warned[-5:])

    def clear_warnings(self) -> None:
        self.warned, self.warnings.value = [], ""

    def show_error(self, error: Exception) -> None:
        """An error in the status line: ours as its one line, a library's with its traceback visible."""
        if isinstance(error, ConfigError):
            self.say(html.escape(str(error)), error=True)
        else:
            self.say(f"{html.escape(type(error).__name__)}: {html.escape(str(error))}"
                     f"<pre>{html.escape(''.join(traceback.format_exception(error)))}</pre>", error=True)

    def _guarded(self, fn: Callable[[], None]) -> Callable[[Any], None]:
        """Widget callbacks' exceptions go to the browser console, unseen: show them in the panel;
        so are the warnings raised while the callback runs."""
        def handler(_button: Any) -> None:
            route_warnings()
            thread = threading.current_thread()
            before = OWNERS.get(thread)
            OWNERS[thread] = self
            try:
                fn()
            except Exception as e:
                self.show_error(e)
            finally:
                if before is None:
                    del OWNERS[thread]
                else:
                    OWNERS[thread] = before
        return handler
