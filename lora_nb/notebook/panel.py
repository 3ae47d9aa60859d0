"""The widget panel: a recipe as controls, Train / Stop / Save now / Generate / Compare / Export.

Train runs the controls as a recipe through ``lora_nb.run`` on the loaded base, in a background
thread so the kernel stays idle and the Stop button's click is handled while training runs.
Everything the thread shows goes through widget values (the chart image, the status line),
never ``with output:`` from the thread.
Each press of Train injects a fresh adapter with the current settings and trains it: change a
control, press Train again, and compare the runs below (also ``%lora runs``).
"""

from __future__ import annotations

import dataclasses
import html
import traceback
from typing import Any, Optional

import ipywidgets as w

from ..errors import ConfigError
from ..provenance import unwrap
from ..recipe import FORMATS, VARIANTS, LoraSection, Recipe, TrainSection
from .session import Session

BUTTONS = ("Load", "Preview", "Train", "Stop", "Save now", "Generate", "Compare", "Export code")


class WidgetView:
    """A LiveChart view drawing into an Image and an HTML widget (safe from the training thread)."""

    def __init__(self, image: w.Image, status: w.HTML) -> None:
        self.image, self.status = image, status

    def show(self, png: bytes, status: str) -> None:
        if png:
            self.image.value = png
            self.image.layout.display = ""
        self.status.value = status


class Panel(w.VBox):
    """Controls for a recipe on the session's model, with the live chart inside.

    Example:
        >>> Panel()          # in a notebook cell; or %lora panel       # doctest: +SKIP
    """

    def __init__(self, session: Optional[Session] = None, model: str = "", data: str = "") -> None:
        self.session = session or Session()
        self.report: Any = None
        layout = w.Layout(width="auto")
        s = self.session
        self.model_name = w.Text(value=model or (s.model_section.name if s.model_section else ""), description="model",
                                 placeholder="Hub name or folder", layout=w.Layout(width="60%"))
        self.quant = w.Dropdown(options=[("full precision", None), ("8-bit", "8bit"), ("4-bit (QLoRA)", "4bit")],
                                value=s.model_section.quant if s.model_section else None, description="quant")
        self.roles = w.HBox([])
        self.r = w.IntSlider(value=LoraSection.r, min=1, max=128, description="r")
        self.alpha = w.FloatText(value=LoraSection.alpha, description="alpha")
        self.dropout = w.FloatSlider(value=LoraSection.dropout, min=0.0, max=0.5, step=0.01, description="dropout")
        self.variant = w.Dropdown(options=list(VARIANTS), value=LoraSection.variant, description="variant")
        self.params = w.HTML()
        self.data = w.Text(value=data, description="data", placeholder="train.jsonl", layout=w.Layout(width="55%"))
        self.format = w.Dropdown(options=[("auto", None)] + [(f, f) for f in FORMATS], value=None, description="format")
        self.lr = w.FloatText(value=TrainSection.lr, description="lr")
        self.steps = w.IntText(value=TrainSection.steps or 0, description="steps",
                               tooltip="0: one pass over the data (the recipe's default)")
        self.batch_size = w.IntText(value=TrainSection.batch_size, description="batch size")
        self.max_length = w.IntText(value=TrainSection.max_length, description="max length")
        self.prompt = w.Textarea(placeholder="a prompt for Generate / Compare", layout=w.Layout(width="60%"))
        self.buttons = {name: w.Button(description=name, layout=w.Layout(width="auto")) for name in BUTTONS}
        self.buttons["Train"].button_style = "success"
        self.buttons["Stop"].button_style = "danger"
        self.status = w.HTML()
        # native size (crisp), hidden until the first image so no broken-image icon shows
        self.chart = w.Image(format="png", layout=w.Layout(width="720px", display="none"))
        self.result = w.HTML()
        self.runs = w.HTML()
        for name, fn in (("Load", self.load), ("Preview", self.preview), ("Train", self.train), ("Stop", self.stop),
                         ("Save now", self.save_now), ("Generate", self.generate), ("Compare", self.compare),
                         ("Export code", self.export)):
            self.buttons[name].on_click(self._guarded(fn))
        for control in (self.r,):
            control.observe(lambda _: self.update_params(), names="value")
        b = self.buttons
        super().__init__([
            w.HTML("<b>lora_nb</b> — change a setting, press Train, compare the runs"),
            w.HBox([self.model_name, self.quant, b["Load"]]),
            w.HTML("<b>targets</b>"), self.roles, w.HBox([self.r, self.alpha]), w.HBox([self.dropout, self.variant]), self.params,
            w.HBox([self.data, self.format, b["Preview"]]),
            w.HBox([self.lr, self.steps]), w.HBox([self.batch_size, self.max_length]),
            w.HBox([b["Train"], b["Stop"], b["Save now"], b["Export code"]]),
            self.status, self.chart,
            w.HBox([self.prompt, w.VBox([b["Generate"], b["Compare"]])]),
            self.result, self.runs,
        ], layout=layout)
        if s.runs and s.runs[-1].recipe is not None:
            self.prefill(s.runs[-1].recipe)
        if s.model is not None:
            self.show_targets()
        self.show_runs()

    def prefill(self, recipe: Any) -> None:
        """Start from a run's settings, so the next experiment changes one thing at a time."""
        lora, train, data = recipe.lora, recipe.train, recipe.data
        self.r.value, self.alpha.value, self.dropout.value, self.variant.value = lora.r, lora.alpha, lora.dropout, lora.variant
        self.data.value, self.format.value = self.data.value or data.path, data.format
        self.lr.value, self.batch_size.value, self.max_length.value = train.lr, train.batch_size, train.max_length
        self.steps.value = train.steps or self.steps.value

    # --- actions (each runs in the kernel's widget-message handler: keep them short) ------------

    def load(self) -> None:
        self.say("loading…")
        self.session.load(self.model_name.value.strip(), quant=self.quant.value)
        self.show_targets()
        self.say(f"loaded {html.escape(self.model_name.value)}")

    def show_targets(self) -> None:
        self.report = self.session.targets(unwrap(self.session.model), r=self.r.value)
        boxes = []
        for role in self.report.roles:
            if self.report.names(role) and role != "head":
                box = w.Checkbox(value=role in ("attention", "mlp"), description=role, indent=False,
                                 layout=w.Layout(width="auto", margin="0 1.5em 0 0"))
                box.observe(lambda _: self.update_params(), names="value")
                boxes.append(box)
        self.roles.children = boxes
        self.update_params()

    def targets(self) -> list[str]:
        return [box.description for box in self.roles.children if box.value]

    def update_params(self) -> None:
        if self.report is None:
            self.params.value = "<i>load a model to see its targets</i>"
            return
        picked = [n for role in self.targets() for n in self.report.names(role)]
        n = self.report.lora_params(picked, r=self.r.value)
        pct = 100 * n / self.report.total_params if self.report.total_params else 0
        self.params.value = f"trainable LoRA parameters: <b>{n:,}</b> ({pct:.3f}% of {self.report.total_params:,})"

    def preview(self) -> None:
        from ..data import preview

        self.session.require_model()
        self.result.value = preview(self.data.value.strip(), self.session.tokenizer, n=3, format=self.format.value,
                                    max_length=self.max_length.value)._repr_html_()

    def train(self) -> None:
        from .live import LiveChart

        self.session.require_model()  # first: without a model there are no roles to tick
        self.session.require_idle()
        if not self.targets():
            raise ConfigError("targets", problem="tick at least one role")
        recipe = Recipe.from_dict({  # the controls as a recipe: validated, recorded and exported like any other
            "model": dataclasses.asdict(self.session.model_section),
            "lora": dict(r=self.r.value, alpha=self.alpha.value, dropout=self.dropout.value, targets=self.targets(),
                         variant=self.variant.value),
            "data": dict(path=self.data.value.strip(), format=self.format.value),
            "train": dict(steps=self.steps.value or None, lr=self.lr.value, batch_size=self.batch_size.value,
                          max_length=self.max_length.value)})
        chart = LiveChart(view=WidgetView(self.chart, self.status))
        run = self.session.run_recipe(recipe, live=False, on_loaded_base=True, background=True, callbacks=[chart],
                                      progress=False)
        run.on_done(lambda _: self.show_runs())
        self.say(f"training {html.escape(run.name)}…")

    def stop(self) -> None:
        self.session.stop()

    def save_now(self) -> None:
        if self.session.active is None or not self.session.active.running:
            raise ConfigError("save now", problem="no run is training")
        self.session.active.save_now()

    def generate(self) -> None:
        answer = self.session.generate(self.prompt.value)
        self.result.value = f"<pre>{html.escape(answer)}</pre>"

    def compare(self) -> None:
        self.result.value = self.session.compare([self.prompt.value])._repr_html_()

    def export(self) -> None:
        self.result.value = f"<pre style='max-height:30em;overflow:auto'>{html.escape(self.session.export())}</pre>"

    # --- plumbing -------------------------------------------------------------------------------

    def show_runs(self) -> None:
        self.runs.value = self.session.run_table()._repr_html_() if self.session.runs else ""

    def say(self, message: str, error: bool = False) -> None:
        color = "#b00" if error else "#333"
        self.status.value = f"<span style='color:{color}'>{message}</span>"

    def _guarded(self, fn):
        """Widget callbacks' exceptions go to the browser console, unseen: show them in the panel."""
        def handler(_button: Any) -> None:
            try:
                fn()
            except ConfigError as e:
                self.say(html.escape(str(e)), error=True)
            except Exception as e:  # a library error: keep its traceback visible
                self.say(f"{html.escape(type(e).__name__)}: {html.escape(str(e))}<pre>{html.escape(traceback.format_exc())}</pre>", error=True)
        return handler


