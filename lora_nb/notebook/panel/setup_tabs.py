"""The panel's first three tabs: Model (a name, the quantisation, Load), Adapter (the target roles
ticked from the loaded model, r, alpha, dropout, variant, with the parameter count and the memory
they cost) and Data (the file, its format, the eval split, Preview).

Each tab is a part of :class:`~lora_nb.notebook.panel.Panel`: ``*_page`` makes its controls (as the
panel's attributes) and returns the page; its methods are the page's actions.
"""

from __future__ import annotations

import html
from typing import Any, Optional

import ipywidgets as w

from ...model.discovery import smallest_dimension
from ...core.errors import ConfigError
from ...recipe.fields import TRAIN_ON
from ...recipe.schema import FORMATS, VARIANTS, DataSection, LoraSection, ModelSection
from ...runs.provenance import unwrap
from .widgets import RANKS, TABS, WARN, field_tooltip, wide


class ModelTab:
    """The Model tab: a Hub name or folder, the quantisation, and Load."""

    def model_page(self, model: str) -> w.Widget:
        """The tab's controls (``model``: the name to start with, else the session's) and page."""
        s = self.session
        self.model_name = w.Text(value=model or (s.model_section.name if s.model_section else ""), description="model",
                                 placeholder="Hub name or folder", layout=wide(), **field_tooltip(ModelSection, "name"))
        self.quant = w.Dropdown(options=[("none (bf16/fp32)", ""), ("8-bit", "8bit"), ("4-bit (QLoRA)", "4bit")],
                                value=(s.model_section.quant if s.model_section else None) or "", description="quant",
                                **field_tooltip(ModelSection, "quant"))
        return w.HBox([self.model_name, self.quant, self.buttons["Load"]])

    def load(self) -> None:
        self.say("loading…")
        self.clear_warnings()
        self.session.load(self.model_name.value.strip(), quant=self.quant.value or None)
        self.show_targets()
        self.tabs.selected_index = TABS.index("Adapter")
        self.say(f"loaded {html.escape(self.model_name.value)}")


class AdapterTab:
    """The Adapter tab: the roles to target (from the loaded model), r, alpha, dropout, variant, and
    the trainable parameters and training memory they come to."""

    def adapter_page(self) -> w.Widget:
        """The tab's controls and page; the count and the memory line follow r."""
        self.report: Any = None
        self.adapter_params = 0  # parameters of an adapter already on the model (not the base's)
        self.roles = w.HBox([])
        self.r = w.Dropdown(options=RANKS, value=LoraSection.r, description="r", **field_tooltip(LoraSection, "r"))
        self.alpha = w.FloatText(value=LoraSection.alpha, description="alpha", **field_tooltip(LoraSection, "alpha"))
        self.dropout = w.FloatSlider(value=LoraSection.dropout, min=0.0, max=0.5, step=0.01, description="dropout",
                                     **field_tooltip(LoraSection, "dropout"))
        self.variant = w.Dropdown(options=list(VARIANTS), value=LoraSection.variant, description="variant",
                                  **field_tooltip(LoraSection, "variant"))
        self.params = w.HTML()
        self.r.observe(lambda _: self.update_params(), names="value")
        return w.VBox([w.HBox([w.HTML("<b>targets</b>&nbsp;&nbsp;"), self.roles]), w.HBox([self.r, self.alpha]),
                       w.HBox([self.dropout, self.variant]), self.params])

    def show_targets(self) -> None:
        model = self.session.model
        planned = self.session.targets(unwrap(model), r=self.r.value)
        self.report = planned.discovery
        # discover() counts an adapter already on the model as part of it: the share is of the base
        self.adapter_params = sum(p.numel() for name, p in model.named_parameters() if ".lora_" in name)
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
            self.params.value = "<i>load a model (Model tab) to see its targets</i>"
            return
        r, names = self.r.value, {n for role in self.targets() for n in self.report.names(role)}
        shapes = {m.name: (m.in_features, m.out_features) for m in self.report.modules if m.name in names}
        n, base = self.report.lora_params(sorted(names), r=r), self.report.total_params - self.adapter_params
        line = (f"trainable LoRA parameters: <b>{n:,}</b> = {100 * n / base:.3g}% of the model's {base:,}"
                if base else "")
        smallest = smallest_dimension(shapes)
        if smallest is not None and r >= smallest[1]:
            where, dim = smallest[0].rsplit(".", 1)[-1], smallest[1]
            line += (f"<br><span style='color:{WARN}'>⚠ r={r} is not below the smallest adapted dimension "
                     f"({dim} in {html.escape(where)}): LoRA stops being low-rank</span>")
        line += self._memory_line(r)
        self.params.value = line

    def _memory_line(self, r: int) -> str:
        """Training memory for the roles ticked, r and the Train tab's batch (lora_nb.estimate on the loaded model)."""
        from ...model.memory import estimate

        roles, batch, length = self.targets(), self.batch_size.value, self.max_length.value
        if not roles:
            return ""
        try:
            memory = estimate(unwrap(self.session.model), r=r, targets=roles, batch_size=batch, max_length=length)
        except ConfigError:  # a batch size or length being typed in: no line until it is a valid one
            return ""
        return (f"<br>memory ({html.escape(', '.join(roles))}, r={r}, batch {batch} × {length}): "
                f"{html.escape(memory.summary())}")


class DataTab:
    """The Data tab: the training data, its format, which tokens train, the eval split, and Preview (the loss
    mask of the first rows, :func:`lora_nb.data.check`)."""

    def data_page(self, data: str) -> w.Widget:
        """The tab's controls (``data``: the path to start with) and page."""
        self.data = w.Text(value=data, description="data", placeholder="train.jsonl", layout=wide(),
                           **field_tooltip(DataSection, "path"))
        self.format = w.Dropdown(options=[("auto (from the columns)", "")] + [(f, f) for f in FORMATS], value="",
                                 description="format", **field_tooltip(DataSection, "format"))
        self.eval = w.Text(description="eval", placeholder="0.1 (a fraction) or eval.jsonl",
                           **field_tooltip(DataSection, "eval"))
        self.train_on = w.Dropdown(options=[("auto (the template decides)", "")] + [(v, v) for v in TRAIN_ON],
                                   value="", description="train on", **field_tooltip(DataSection, "train_on"))
        self.sample = w.HTML()
        self.pickers, self.given_columns = w.HBox([]), None  # given_columns: a recipe's, until the pickers show
        self.data.observe(lambda _: self.show_pickers([]), names="value")
        return w.VBox([w.HBox([self.data, self.format, self.buttons["Preview"]]), self.pickers,
                       w.HBox([self.train_on, self.eval]), self.sample])

    def preview(self) -> None:
        from ...data.prepare import read

        self.session.require_model()
        self.show_pickers(read(self.data.value.strip()))
        self.show_sample()

    def show_sample(self) -> None:
        """The loss mask of the first rows, turn by turn (:func:`lora_nb.data.check`)."""
        self.sample.value = self.session.check_data(self.data.value.strip(), rows=3, format=self.format.value or None,
                                                    train_on=self.train_on.value or None, columns=self.columns(),
                                                    max_length=self.max_length.value)._repr_html_()

    def show_pickers(self, rows: Any) -> None:
        """A column picker per field of the data's format (the one chosen, else the one its columns give
        with the mapping so far or a known shape's, else alpaca's); picking one updates the preview."""
        from ...data.columns import fitting
        from ...hf.columns import column_pairs
        from ...hf.formats import FIELDS, detect_format

        names = list(getattr(rows, "column_names", rows))
        try:
            pairs = column_pairs(self.columns() or {}, names) if names else {}
        except ValueError:
            pairs = {}
        seen = set(names) - set(pairs.values()) | set(pairs)
        shape = fitting(rows) if names else {}
        fmt = self.format.value or detect_format(seen) or detect_format(set(names) - set(shape.values()) | set(shape))
        self.given_columns = self.given_columns if names else None
        pickers = []
        for name in FIELDS.get(fmt or "alpaca", ()) if names else ():
            picked = pairs.get(name, name)
            picked = picked if picked in names else ""
            picker = w.Dropdown(options=[("—", "")] + [(n, n) for n in names], value=picked, description=name,
                                **field_tooltip(DataSection, "columns"))
            picker.observe(self._guarded(self.show_sample), names="value")
            pickers.append(picker)
        self.pickers.children = pickers

    def columns(self) -> Optional[dict]:
        """The data's columns picked for lora_nb's (``data.columns``); the recipe's until the pickers show."""
        if not self.pickers.children:
            return self.given_columns
        return {p.description: p.value for p in self.pickers.children if p.value and p.value != p.description} or None
