"""The panel's Train tab: the training settings, Train (a fresh adapter from the controls, or the
current adapter trained further), Sweep (one fresh adapter per value of one or two settings), and the
live chart with the sweep's table beside it. Both train in a background thread, so Stop works.

A part of :class:`~lora_nb.notebook.panel.Panel` (see :mod:`.setup_tabs`).
"""

from __future__ import annotations

import html

import ipywidgets as w

from ...core.errors import ConfigError
from ...experiments.sweeps.grid import setting_key
from ...experiments.sweeps.sweep import Sweep
from ...hf.trackers import installed_trackers
from ...recipe.schema import SECTIONS, TrainSection, train_kwargs
from ..typed import comma_values
from .view import WidgetView
from .widgets import TOOLTIP, field_tooltip, fitted

# The settings Sweep offers, and the values it suggests for each (targets: from the ticked roles).
SWEEP_VALUES = {"r": "4, 8, 16", "alpha": "16, 32, 64", "lr": "1e-4, 2e-4, 5e-4", "targets": "",
                "dropout": "0, 0.05, 0.1", "steps": "100, 200, 400", "variant": "lora, rslora, dora",
                "max_length": "256, 512, 1024"}


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


class TrainTab:
    """The Train tab: lr, steps, epochs, batch size, max length, eval interval; Train, or Sweep one
    or two settings over typed values; the live chart and the sweep's table."""

    def train_page(self) -> w.Widget:
        """The tab's controls and page; the Adapter tab's count and memory line follow batch and length."""
        self.lr = w.FloatText(value=TrainSection.lr, description="lr", **field_tooltip(TrainSection, "lr"))
        self.steps = w.IntText(value=TrainSection.steps or 0, description="steps",
                               **field_tooltip(TrainSection, "steps"))
        self.epochs = w.FloatText(value=TrainSection.epochs or 0, description="epochs",
                                  **field_tooltip(TrainSection, "epochs"))
        self.batch_size = w.IntText(value=TrainSection.batch_size, description="batch size",
                                    **field_tooltip(TrainSection, "batch_size"))
        self.max_length = w.IntText(value=TrainSection.max_length, description="max length",
                                    **field_tooltip(TrainSection, "max_length"))
        self.eval_steps = w.IntText(value=TrainSection.eval_steps or 0, description="eval every",
                                    **field_tooltip(TrainSection, "eval_steps"))
        # only the trackers installed here (found, not imported): picking one reports the run there as well
        self.tracker = w.Dropdown(options=["none", *installed_trackers()], value="none", description="tracker",
                                  **field_tooltip(TrainSection, "report_to"))
        self.mirror = w.Text(value="", description="mirror", placeholder="/content/drive/MyDrive/lora_runs",
                             **field_tooltip(TrainSection, "mirror"))
        stopping = field_tooltip(TrainSection, "early_stopping")[TOOLTIP]
        self.patience = w.IntText(value=0, description="early stop", **{
            TOOLTIP: f"Patience: evals without improvement before training stops (0: off). {stopping}"})
        self.continue_adapter = w.Checkbox(value=False, description="continue from the current adapter", indent=False,
                                           layout=fitted())
        narrow = {"style": {"description_width": "initial"}, "layout": w.Layout(width="auto")}
        second = [("—", "")] + [(k, k) for k in SWEEP_VALUES]
        self.sweep_keys = (w.Dropdown(options=list(SWEEP_VALUES), value="r", description="or sweep", **narrow),
                           w.Dropdown(options=second, value="", description="×", **narrow))
        self.sweep_values = tuple(w.Text(placeholder="values, comma-separated", layout=w.Layout(width="14em"))
                                  for _ in self.sweep_keys)
        self.seeds = w.Dropdown(options=(1, 2, 3), value=1, description="seeds", **narrow,
                                **{TOOLTIP: "runs per point with seed, seed + 1, …: the table gives mean ± spread"})
        for key, values in zip(self.sweep_keys, self.sweep_values):
            key.observe(lambda _, key=key, values=values: self.suggest(key.value, values), names="value")
            self.suggest(key.value, values)
        setattr(self.buttons["Sweep"], TOOLTIP, "train one fresh adapter per value (per combination of the two), "
                "everything else as above; one chart, one table, best row marked")
        # hidden until the first image so no broken-image icon shows; then at the image's own size (crisp)
        self.chart = w.Image(format="png", layout=w.Layout(display="none"))
        self.sweep_table = w.HTML(layout=w.Layout(margin="0 0 0 1em"))
        for control in (self.batch_size, self.max_length):
            control.observe(lambda _: self.update_params(), names="value")
        b = self.buttons
        return w.VBox([
            w.HBox([self.lr, self.steps, self.epochs]), w.HBox([self.batch_size, self.max_length, self.eval_steps]),
            w.HBox([self.tracker, self.patience, self.mirror]),
            self.continue_adapter,
            w.HBox([b["Train"], self.sweep_keys[0], self.sweep_values[0], self.sweep_keys[1], self.sweep_values[1],
                    self.seeds, b["Sweep"]], layout=w.Layout(align_items="center")),
            w.HBox([self.chart, self.sweep_table])])

    def train(self) -> None:
        from ..live import LiveChart

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
        self.running_controls()  # then on_done greys Stop out again (at once if the run has already ended)
        run.on_done(lambda _: (self.show_runs(), self.running_controls(False)))
        view.announce(f"training {html.escape(run.name)}…")

    def sweep(self) -> None:
        """One fresh adapter per value (per combination, with two settings) on the loaded base,
        everything else as the controls say; in the background, so Stop ends it."""
        from ..sweep_view import SweepChart

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
        sweep.run((s.model, s.tokenizer), eval_data=recipe.data.eval if scored else None,
                  callbacks=[SweepChart(view=view)], progress=False, background=True)
        s.active = sweep
        self.running_controls()
        sweep.on_done(self.sweep_ended)  # at once if it has already ended (a sweep that fails at once)

    def grid(self) -> dict[str, list]:
        """The sweep's settings (one or two) and the values typed for each."""
        grid: dict[str, list] = {}
        for key, values in zip(self.sweep_keys, self.sweep_values):
            if key.value in grid:
                raise ConfigError(key.value,
                                  problem="is picked twice: pick two different settings (or — for the second)")
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
            setattr(values, TOOLTIP, field_tooltip(SECTIONS[section], name)[TOOLTIP])

    def sweep_ended(self, sweep: Sweep) -> None:
        """A sweep has ended: the session keeps the base with the last point's adapter, and the
        points' runs (as ``Session.sweep`` does); the runs table shows them."""
        self.session.adopt(sweep)
        self.show_runs()
        self.running_controls(False)
