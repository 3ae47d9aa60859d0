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

A widget cannot add a notebook cell in JupyterLab 4 (``set_next_input`` reaches only the cell
being executed, and outputs' JavaScript cannot reach the notebook without a frontend
extension): Export offers Copy and Save to file, and names ``%lora export --cell``.
"""

from __future__ import annotations

import dataclasses
import html
import sys
import threading
import traceback
import warnings
import weakref
from typing import Any, Optional

import ipywidgets as w

from ..hf.compat import tooltip_keyword
from ..core.errors import ConfigError, strict_flags
from ..core.files import atomic_write, check_free
from ..runs.provenance import unwrap
from ..recipe.schema import (FORMATS, SECTIONS, VARIANTS, DataSection, LoraSection, ModelSection, Recipe, TrainSection,
                      train_kwargs)
from ..core.render import html_table
from ..experiments.sweeps import Sweep, setting_key
from .session import Session
from .values import comma_values

BUTTONS = ("Load", "Preview", "Train", "Sweep", "Stop", "Save now", "Generate", "Compare", "Export code", "Save to file")
TABS = ("Model", "Adapter", "Data", "Train", "Runs", "Export")
RANKS = (1, 2, 4, 8, 16, 32, 64, 128)
WARN = "#9a5b00"  # amber: readable on white, distinct from errors' red
# The settings Sweep offers, and the values it suggests for each (targets: from the ticked roles).
SWEEP_VALUES = {"r": "4, 8, 16", "alpha": "16, 32, 64", "lr": "1e-4, 2e-4, 5e-4", "targets": "", "dropout": "0, 0.05, 0.1",
                "steps": "100, 200, 400", "variant": "lora, rslora, dora", "max_length": "256, 512, 1024"}

# Tables as JupyterLab draws notebook outputs (its CSS variables, with fallbacks for other front
# ends); inside a widget they would otherwise get the browser's 1 px padding and the widget's
# 28 px line height, which tears a multi-line cell (a prompt with a newline) apart.
CSS = """<style>
.lora-nb-panel table.lora-nb {border-collapse: collapse; border-spacing: 0; border: none; margin: 0.4em 0;
  font-size: 12px; line-height: 1.4; color: var(--jp-content-font-color1, #222)}
.lora-nb-panel table.lora-nb caption {padding: 0.3em 0; text-align: left}
.lora-nb-panel table.lora-nb th, .lora-nb-panel table.lora-nb td {padding: 0.35em 0.7em; text-align: right;
  vertical-align: top; border: none; line-height: 1.4}
.lora-nb-panel table.lora-nb th {font-weight: bold}
.lora-nb-panel table.lora-nb thead {border-bottom: 1px solid var(--jp-border-color1, #bdbdbd)}
.lora-nb-panel table.lora-nb tbody tr:nth-child(even) {background: var(--jp-rendermime-table-row-background, #f5f5f5)}
.lora-nb-panel table.lora-nb tbody tr:hover {background: var(--jp-rendermime-table-row-hover-background, #e3f2fd)}
.lora-nb-panel .lora-nb-scroll {overflow: auto; max-height: 14em}
.lora-nb-panel textarea.lora-nb-code {width: 100%; box-sizing: border-box; font: 12px/1.4 var(--jp-code-font-family, monospace)}
</style>"""

# The Copy button's click: the clipboard API where the page is a secure context (https, localhost),
# else the older copy command on the selected text; it says which happened.
COPY_JS = ("const box = this.parentElement.querySelector('textarea'), said = this.nextElementSibling;"
           "box.focus(); box.select();"
           "const done = ok => { said.textContent = ok ? ' copied' : ' selected: press Ctrl+C (⌘C)'; };"
           "if (navigator.clipboard && window.isSecureContext) {"
           "navigator.clipboard.writeText(box.value).then(() => done(true), () => done(document.execCommand('copy')));"
           "} else { done(document.execCommand('copy')); }")

_TOOLTIP = tooltip_keyword(w.__version__)


def _help(section: type, name: str) -> dict:
    """A control's tooltip: the setting's help text from the recipe, where it is defined once."""
    return {_TOOLTIP: next(f.metadata["help"] for f in dataclasses.fields(section) if f.name == name)}


def sweep_values(key: str, text: str) -> list:
    """The values typed for a sweep setting: comma-separated, each read as a YAML scalar as
    ``%lora sweep`` reads them; brackets keep a list together as one value.

    Example:
        >>> sweep_values("lr", "1e-4, 2e-4"), sweep_values("targets", "[q_proj, v_proj], all-linear")
        ([0.0001, 0.0002], [['q_proj', 'v_proj'], 'all-linear'])
    """
    if not text.strip():
        raise ConfigError(key, problem="type the values to try, comma-separated (e.g. 4, 8, 16)")
    return comma_values(key, text)


class WidgetView:
    """A LiveChart or SweepChart view drawing into the panel's chart, status line and sweep table,
    from the training thread.

    The thread drawing here is the panel's: its warnings show in the panel too. ``note`` (what
    the run trains: a fresh adapter, or which one it continues) heads the status line.
    """

    def __init__(self, panel: Panel) -> None:
        self.panel, self.note, self.drawn = panel, "", False
        self._lock = threading.Lock()

    def show(self, png: bytes, status: str, table: str = "") -> None:
        """Draw a chart (a run's dashboard, a sweep's overlay) at its own size; ``table``: a sweep's points."""
        if threading.current_thread() is not threading.main_thread():  # never claim the cells' thread for good
            _OWNERS[threading.current_thread()] = self.panel
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


class Panel(w.VBox):
    """Controls for a recipe on the session's model, in tabs, with the live chart in the Train tab.

    Example:
        >>> Panel()          # in a notebook cell; or %lora panel       # doctest: +SKIP
    """

    def __init__(self, session: Optional[Session] = None, model: str = "", data: str = "") -> None:
        self.session = s = session or Session()
        self.report: Any = None
        self.adapter_params = 0  # parameters of an adapter already on the model (not the base's)
        self.warned: list[str] = []
        wide, auto = w.Layout(width="60%"), w.Layout(width="auto", flex="0 0 auto")  # auto: never squeezed
        self.model_name = w.Text(value=model or (s.model_section.name if s.model_section else ""), description="model",
                                 placeholder="Hub name or folder", layout=wide, **_help(ModelSection, "name"))
        self.quant = w.Dropdown(options=[("none (bf16/fp32)", ""), ("8-bit", "8bit"), ("4-bit (QLoRA)", "4bit")],
                                value=(s.model_section.quant if s.model_section else None) or "", description="quant",
                                **_help(ModelSection, "quant"))
        self.roles = w.HBox([])
        self.r = w.Dropdown(options=RANKS, value=LoraSection.r, description="r", **_help(LoraSection, "r"))
        self.alpha = w.FloatText(value=LoraSection.alpha, description="alpha", **_help(LoraSection, "alpha"))
        self.dropout = w.FloatSlider(value=LoraSection.dropout, min=0.0, max=0.5, step=0.01, description="dropout",
                                     **_help(LoraSection, "dropout"))
        self.variant = w.Dropdown(options=list(VARIANTS), value=LoraSection.variant, description="variant",
                                  **_help(LoraSection, "variant"))
        self.params = w.HTML()
        self.data = w.Text(value=data, description="data", placeholder="train.jsonl", layout=wide, **_help(DataSection, "path"))
        self.format = w.Dropdown(options=[("auto (from the columns)", "")] + [(f, f) for f in FORMATS], value="",
                                 description="format", **_help(DataSection, "format"))
        self.eval = w.Text(description="eval", placeholder="0.1 (a fraction) or eval.jsonl", **_help(DataSection, "eval"))
        self.sample = w.HTML()
        self.lr = w.FloatText(value=TrainSection.lr, description="lr", **_help(TrainSection, "lr"))
        self.steps = w.IntText(value=TrainSection.steps or 0, description="steps", **_help(TrainSection, "steps"))
        self.epochs = w.FloatText(value=TrainSection.epochs or 0, description="epochs", **_help(TrainSection, "epochs"))
        self.batch_size = w.IntText(value=TrainSection.batch_size, description="batch size", **_help(TrainSection, "batch_size"))
        self.max_length = w.IntText(value=TrainSection.max_length, description="max length", **_help(TrainSection, "max_length"))
        self.eval_steps = w.IntText(value=TrainSection.eval_steps or 0, description="eval every",
                                    **_help(TrainSection, "eval_steps"))
        self.continue_adapter = w.Checkbox(value=False, description="continue from the current adapter", indent=False,
                                           layout=auto)
        narrow = {"style": {"description_width": "initial"}, "layout": w.Layout(width="auto")}
        self.sweep_keys = (w.Dropdown(options=list(SWEEP_VALUES), value="r", description="or sweep", **narrow),
                           w.Dropdown(options=[("—", "")] + [(k, k) for k in SWEEP_VALUES], value="", description="×", **narrow))
        self.sweep_values = tuple(w.Text(placeholder="values, comma-separated", layout=w.Layout(width="14em"))
                                  for _ in self.sweep_keys)
        self.seeds = w.Dropdown(options=(1, 2, 3), value=1, description="seeds", **narrow,
                                **{_TOOLTIP: "runs per point with seed, seed + 1, …: the table gives mean ± spread"})
        for key, values in zip(self.sweep_keys, self.sweep_values):
            key.observe(lambda _, key=key, values=values: self.suggest(key.value, values), names="value")
            self.suggest(key.value, values)
        self.prompt = w.Textarea(placeholder="a prompt for Generate / Compare", layout=wide)
        self.export_file = w.Text(value="train_lora.py", description="file", layout=w.Layout(width="22em"))
        self.buttons = {name: w.Button(description=name, layout=auto) for name in BUTTONS}
        self.buttons["Train"].button_style = "success"
        setattr(self.buttons["Sweep"], _TOOLTIP, "train one fresh adapter per value (per combination of the two), "
                "everything else as above; one chart, one table, best row marked")
        self.buttons["Stop"].button_style = "danger"
        self.status = w.HTML(layout=w.Layout(margin="0 0 0 1em"))
        self.warnings = w.HTML()
        # hidden until the first image so no broken-image icon shows; then at the image's own size (crisp)
        self.chart = w.Image(format="png", layout=w.Layout(display="none"))
        self.sweep_table = w.HTML(layout=w.Layout(margin="0 0 0 1em"))
        self.result, self.runs, self.code = w.HTML(), w.HTML(), w.HTML()
        actions = {"Load": self.load, "Preview": self.preview, "Train": self.train, "Sweep": self.sweep, "Stop": self.stop,
                   "Save now": self.save_now, "Generate": self.generate, "Compare": self.compare,
                   "Export code": self.export, "Save to file": self.save_script}
        for name, fn in actions.items():
            self.buttons[name].on_click(self._guarded(fn))
        for control in (self.r, self.batch_size, self.max_length):  # the count and the memory line follow them
            control.observe(lambda _: self.update_params(), names="value")
        b = self.buttons
        pages = [
            w.HBox([self.model_name, self.quant, b["Load"]]),
            w.VBox([w.HBox([w.HTML("<b>targets</b>&nbsp;&nbsp;"), self.roles]), w.HBox([self.r, self.alpha]),
                    w.HBox([self.dropout, self.variant]), self.params]),
            w.VBox([w.HBox([self.data, self.format, b["Preview"]]), self.eval, self.sample]),
            w.VBox([w.HBox([self.lr, self.steps, self.epochs]), w.HBox([self.batch_size, self.max_length, self.eval_steps]),
                    self.continue_adapter,
                    w.HBox([b["Train"], self.sweep_keys[0], self.sweep_values[0], self.sweep_keys[1], self.sweep_values[1],
                            self.seeds, b["Sweep"]], layout=w.Layout(align_items="center")),
                    w.HBox([self.chart, self.sweep_table])]),
            w.VBox([self.runs, w.HBox([self.prompt, w.VBox([b["Generate"], b["Compare"]])]), self.result]),
            w.VBox([w.HBox([b["Export code"], self.export_file, b["Save to file"]]), self.code]),
        ]
        self.tabs = w.Tab(children=pages)
        for i, title in enumerate(TABS):
            self.tabs.set_title(i, title)
        super().__init__([
            w.HTML(CSS + "<b>lora_nb</b> — change a setting, press Train (or Sweep a few values), compare the runs"),
            w.HBox([b["Stop"], b["Save now"], self.status]), self.warnings, self.tabs,
        ], layout=w.Layout(width="auto"))
        self.add_class("lora-nb-panel")
        _route_warnings()
        if s.runs and s.runs[-1].recipe is not None:
            self.prefill(s.runs[-1].recipe)
        if s.model is not None:
            self.show_targets()
        else:
            self.update_params()
        self.tabs.selected_index = TABS.index("Train" if s.model is not None else "Model")
        self.show_runs()

    def prefill(self, recipe: Any) -> None:
        """Start from a run's settings, so the next experiment changes one thing at a time."""
        lora, train, data = recipe.lora, recipe.train, recipe.data
        self.r.options = sorted(set(RANKS) | {lora.r})
        self.r.value, self.alpha.value, self.dropout.value, self.variant.value = lora.r, lora.alpha, lora.dropout, lora.variant
        self.data.value, self.format.value = self.data.value or data.path, data.format or ""
        self.eval.value = "" if data.eval is None else str(data.eval)
        self.lr.value, self.batch_size.value, self.max_length.value = train.lr, train.batch_size, train.max_length
        self.steps.value, self.epochs.value = train.steps or self.steps.value, train.epochs or 0
        self.eval_steps.value = train.eval_steps or 0

    @strict_flags
    def recipe(self, fresh: bool = True) -> Recipe:
        """The controls as a recipe: validated, recorded and exported like any other (0 and empty: the default)."""
        raw = {"model": dataclasses.asdict(self.session.model_section),
               "data": dict(path=self.data.value.strip(), format=self.format.value or None, eval=self.eval.value.strip() or None),
               "train": dict(steps=self.steps.value or None, epochs=self.epochs.value or None, lr=self.lr.value,
                             batch_size=self.batch_size.value, max_length=self.max_length.value,
                             eval_steps=self.eval_steps.value or None)}
        if fresh:
            raw["lora"] = dict(r=self.r.value, alpha=self.alpha.value, dropout=self.dropout.value, targets=self.targets(),
                               variant=self.variant.value)
        return Recipe.from_dict(raw)

    # --- actions (each runs in the kernel's widget-message handler: keep them short) ------------

    def load(self) -> None:
        self.say("loading…")
        self.clear_warnings()
        self.session.load(self.model_name.value.strip(), quant=self.quant.value or None)
        self.show_targets()
        self.tabs.selected_index = TABS.index("Adapter")
        self.say(f"loaded {html.escape(self.model_name.value)}")

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
        picked = [m for m in self.report.modules if m.name in names]
        n, base = self.report.lora_params(sorted(names), r=r), self.report.total_params - self.adapter_params
        line = f"trainable LoRA parameters: <b>{n:,}</b> = {100 * n / base:.3g}% of the model's {base:,}" if base else ""
        smallest = min(picked, key=lambda m: min(m.in_features, m.out_features), default=None)
        if smallest is not None and r >= min(smallest.in_features, smallest.out_features):
            dim, where = min(smallest.in_features, smallest.out_features), smallest.name.rsplit(".", 1)[-1]
            line += (f"<br><span style='color:{WARN}'>⚠ r={r} is not below the smallest adapted dimension "
                     f"({dim} in {html.escape(where)}): LoRA stops being low-rank</span>")
        line += self._memory_line(r)
        self.params.value = line

    def _memory_line(self, r: int) -> str:
        """Training memory for the roles ticked, r and the Train tab's batch (lora_nb.estimate on the loaded model)."""
        from ..model.memory import estimate

        roles, batch, length = self.targets(), self.batch_size.value, self.max_length.value
        if not roles:
            return ""
        try:
            memory = estimate(unwrap(self.session.model), r=r, targets=roles, batch_size=batch, max_length=length)
        except ConfigError:  # a batch size or length being typed in: no line until it is a valid one
            return ""
        return f"<br>memory ({html.escape(', '.join(roles))}, r={r}, batch {batch} × {length}): {html.escape(memory.summary())}"

    def preview(self) -> None:
        from ..data.prepare import preview

        self.session.require_model()
        self.sample.value = preview(self.data.value.strip(), self.session.tokenizer, n=3, format=self.format.value or None,
                                    max_length=self.max_length.value)._repr_html_()

    def train(self) -> None:
        from .live import LiveChart

        s = self.session
        s.require_model()  # first: without a model there are no roles to tick
        s.require_idle()
        fresh = not self.continue_adapter.value
        if fresh and not self.targets():
            raise ConfigError("targets", problem="tick at least one role (Adapter tab)")
        recipe = self.recipe(fresh)
        self.clear_warnings()
        self.sweep_table.value = ""
        view = WidgetView(self)

        def say(line: str) -> None:  # the session says what it trains (fresh, or which adapter), before it starts
            view.note = line

        chart = LiveChart(view=view)
        if fresh:
            run = s.run_recipe(recipe, live=False, on_loaded_base=True, background=True, callbacks=[chart],
                               progress=False, say=say)
        else:
            run = s.train(recipe.data.path, live=False, background=True, callbacks=[chart], progress=False, say=say,
                          **train_kwargs(recipe))
        run.on_done(lambda _: self.show_runs())
        view.announce(f"training {html.escape(run.name)}…")

    def sweep(self) -> None:
        """One fresh adapter per value (per combination, with two settings) on the loaded base,
        everything else as the controls say; in the background, so Stop ends it."""
        from .sweep_view import SweepChart

        s = self.session
        s.require_model()
        s.require_idle()
        if not self.targets():
            raise ConfigError("targets", problem="tick at least one role (Adapter tab)")
        grid, recipe = self.grid(), self.recipe()
        # held-out rows named in the eval field are also scored (exact match) after each point
        scored = isinstance(recipe.data.eval, str) and recipe.data.format != "text"
        sweep = Sweep(recipe, seeds=self.seeds.value, **grid)  # every point's recipe is checked here, before any trains
        self.clear_warnings()
        self.sweep_table.value = ""
        view = WidgetView(self)
        view.note = (f"sweep: {len(sweep.points)} fresh adapters on the loaded base, varying {' × '.join(grid)}"
                     + (f", each scored on {recipe.data.eval}" if scored else "")
                     + "; the model keeps the last one")
        sweep.on_done(self.sweep_ended)  # before it starts: a sweep that fails at once still reports here
        sweep.run((s.model, s.tokenizer), eval_data=recipe.data.eval if scored else None, callbacks=[SweepChart(view=view)],
                  progress=False, background=True)
        s.active = sweep

    def grid(self) -> dict[str, list]:
        """The sweep's settings (one or two) and the values typed for each."""
        grid: dict[str, list] = {}
        for key, values in zip(self.sweep_keys, self.sweep_values):
            if key.value in grid:
                raise ConfigError(key.value, problem="is picked twice: pick two different settings (or — for the second)")
            if key.value:
                grid[key.value] = sweep_values(key.value, values.value)
        return grid

    def suggest(self, key: str, values: w.Text) -> None:
        """Put values to try for ``key`` in ``values`` (targets: the ticked roles together, then
        all-linear); its hover text is the setting's help from the recipe."""
        ticked = self.targets()
        roles = ticked[0] if len(ticked) == 1 else f"[{', '.join(ticked)}]" if ticked else "attention"
        values.value = f"{roles}, all-linear" if key == "targets" else SWEEP_VALUES.get(key, "")
        values.disabled = not key
        if key:
            section, name = setting_key(key).split(".")
            setattr(values, _TOOLTIP, _help(SECTIONS[section], name)[_TOOLTIP])

    def sweep_ended(self, sweep: Sweep) -> None:
        """A sweep has ended: the session keeps the base with the last point's adapter, and the
        points' runs (as ``Session.sweep`` does); the runs table shows them."""
        self.session.adopt(sweep)
        self.show_runs()

    def stop(self) -> None:
        self.session.stop()

    def save_now(self) -> None:
        active = self.session.active
        if active is None or not active.running:
            raise ConfigError("save now", problem="no run is training")
        if isinstance(active, Sweep):  # the point in training
            active = next((p.run for p in active.points if p.status == "running" and p.run is not None), None)
            if active is None:
                raise ConfigError("save now", problem="the sweep's next point has not started training yet")
        active.save_now()

    def generate(self) -> None:
        answer = self.session.generate(self.prompt.value)
        self.result.value = f"<pre>{html.escape(answer)}</pre>"

    def compare(self) -> None:
        self.result.value = self.session.compare([self.prompt.value])._repr_html_()

    def export(self) -> None:
        script = self.session.export()
        self.code.value = (
            f"<div><textarea class='lora-nb-code' rows='18' readonly spellcheck='false' onfocus='this.select()'>"
            f"{html.escape(script)}</textarea><br><button class='jupyter-button widget-button' "
            f"onclick=\"{html.escape(COPY_JS)}\">Copy</button><span></span></div>"
            "<div>A widget cannot add a notebook cell: to put this script in the next cell, run "
            "<code>%lora export --cell</code> in a cell, or Copy and paste it into a new one.</div>")

    def save_script(self) -> None:
        name = self.export_file.value.strip()
        if not name:
            raise ConfigError("file", problem="name the script to write, e.g. train_lora.py")
        script = self.session.export()
        path = atomic_write(check_free(name, "file", option="%lora export FILE --force"), script)
        self.say(f"wrote {html.escape(str(path))} — run it with: accelerate launch {html.escape(str(path))}")

    # --- plumbing -------------------------------------------------------------------------------

    def show_runs(self) -> None:
        """The runs table (scrolling past a few runs) above their loss curves, drawn smaller than in a cell."""
        from ..core.charts import png_img

        table = self.session.run_table()
        if not table.runs:
            self.runs.value = "<i>no runs yet</i>"
            return
        self.runs.value = (f"<div class='lora-nb-scroll'>{html_table(table.HEADERS, table.rows())}</div>"
                           + png_img(table.figure(), style="width:560px"))

    @strict_flags
    def say(self, message: str, error: bool = False) -> None:
        color = "#b00" if error else "#333"
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

    def _guarded(self, fn):
        """Widget callbacks' exceptions go to the browser console, unseen: show them in the panel;
        so are the warnings raised while the callback runs."""
        def handler(_button: Any) -> None:
            _route_warnings()
            thread = threading.current_thread()
            before = _OWNERS.get(thread)
            _OWNERS[thread] = self
            try:
                fn()
            except ConfigError as e:
                self.say(html.escape(str(e)), error=True)
            except Exception as e:  # a library error: keep its traceback visible
                self.say(f"{html.escape(type(e).__name__)}: {html.escape(str(e))}<pre>{html.escape(traceback.format_exc())}</pre>", error=True)
            finally:
                if before is None:
                    del _OWNERS[thread]
                else:
                    _OWNERS[thread] = before
        return handler


# --- warnings, by thread ------------------------------------------------------------------------
# warnings.catch_warnings swaps module-wide state (it is not thread-safe), and a background
# thread's stderr lands in JupyterLab's log console. So the panel hooks warnings.showwarning and
# keys on the thread: a panel's action (while it runs) and its training thread (once it draws into
# the panel) hand their warnings to that panel. When another hook comes next (lora_nb.core.quiet's,
# which keeps library noise in the run's log.txt), it gets the panel as the file to write what it
# does not keep; when Python's own comes next, the panel shows the warning itself. Every other
# thread's warnings go on as before.

_OWNERS: weakref.WeakKeyDictionary[threading.Thread, Panel] = weakref.WeakKeyDictionary()
_next_hook: Any = None
_inside = threading.local()


class _PanelFile:
    """Where the next hook writes a warning: the panel, as one line."""

    def __init__(self, panel: Panel, category: type, message: Any) -> None:
        self.panel, self.category, self.message = panel, category, message

    def write(self, _text: str) -> None:
        self.panel.warn(self.category, self.message)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    panel = _OWNERS.get(threading.current_thread()) if file is None else None
    inside = getattr(_inside, "hook", False)  # a hook installed after this one handed the warning back
    if panel is not None and (inside or _next_hook is warnings._showwarning_orig):
        panel.warn(category, message)
    elif inside:
        (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))
    else:
        _inside.hook = True
        try:
            _next_hook(message, category, filename, lineno, _PanelFile(panel, category, message) if panel is not None else file, line)
        finally:
            _inside.hook = False


def _route_warnings() -> None:
    """Put :func:`_show_warning` first in line (again, if a catch_warnings block or another hook replaced it)."""
    global _next_hook
    if warnings.showwarning is not _show_warning:
        _next_hook, warnings.showwarning = warnings.showwarning, _show_warning
