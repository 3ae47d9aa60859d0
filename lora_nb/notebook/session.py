"""The notebook session: the current model, tokenizer and adapter, and the runs so far.
Magics and the panel act through it; it acts through the Python API only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ..core.errors import ConfigError, strict_flags
from ..core.files import expand_user
from ..recipe.schema import (LoraSection, ModelSection, Recipe, TrainSection, adapter_seed, build_section, lora_kwargs,
                             model_kwargs)

TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainSection)}


class Session:
    """State shared by ``%lora`` and the panel within one kernel.

    Example:
        >>> s = Session()
        >>> s.load("./my-model", quant="4bit")            # doctest: +SKIP
        >>> s.inject(r=8, targets="attention")            # doctest: +SKIP
        >>> run = s.train("train.jsonl", steps=50)        # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.tokenizer: Any = None
        self.model_section: Optional[ModelSection] = None
        self.lora_section: Optional[LoraSection] = None
        self.runs: list = []
        self.active: Any = None  # the Run training in the background, if any
        self.trained_by: Any = None  # the Run that last trained the current adapter (None: untrained so far)

    @strict_flags
    def require_model(self, adapter: bool = False) -> None:
        if self.model is None:
            raise ConfigError("model", problem="no model loaded yet: run %lora load MODEL (or lora_nb.load) first")
        if adapter and not hasattr(self.model, "peft_config"):
            raise ConfigError("adapter", problem="the model has no adapter yet: run %lora inject first")

    def require_idle(self) -> None:
        if self.active is not None and self.active.running:
            what = f"run {self.active.name}" if hasattr(self.active, "name") else f"the sweep in {self.active.dir}"
            raise ConfigError("train", problem=f"{what} is still training in the background: "
                              "%lora stop or %lora wait first")

    def load(self, name: str, **settings: Any):
        from ..model.loading import load

        self.require_idle()
        section = build_section(ModelSection, {"name": expand_user(name), **settings}, "model")
        self.model, self.tokenizer = load(section.name, **model_kwargs(section))
        self.model_section, self.lora_section, self.trained_by = section, None, None
        return self.model

    def targets(self, model: Any = None, r: int = LoraSection.r):
        from ..model.targets import targets_with_memory

        if model is None:
            self.require_model()
            model = self.model
        return targets_with_memory(model, r=r)

    def inject(self, **settings: Any):
        from ..model.injection import inject

        self.require_model()
        self.require_idle()
        section = build_section(LoraSection, settings, "lora")
        self.model = inject(self.model, **settings)
        self.lora_section, self.trained_by = section, None
        return self.model

    @strict_flags
    def train(self, data: Any, *, fresh: bool = False, live: bool = True, background: bool = False,
              say: Optional[Callable[[str], None]] = print, **settings: Any):
        """Train the adapter; with ``live`` a dashboard updates in place. Returns the Run.

        By default training continues the adapter on the model: the one injected last, or as a
        run left it. ``fresh=True`` first puts a fresh adapter on the base, with the settings of
        the last inject (the defaults if there was none), seeded like a recipe's (``lora.seed``,
        else ``seed``). ``say`` is given one line saying which, before anything starts:
        ``fresh adapter: r=16, …``, ``continuing the adapter of run … (step N)`` or ``resuming run …``.

        Example:
            >>> s.train("train.jsonl", steps=50)               # doctest: +SKIP
            continuing the adapter injected with r=16, alpha=32, targets=attention (not trained yet)
            >>> s.train("train.jsonl", steps=50, fresh=True)   # doctest: +SKIP
            fresh adapter: r=16, alpha=32, targets=attention
        """
        from ..model.injection import inject
        from ..training.trainer import train

        self.require_model(adapter=not fresh)
        self.require_idle()
        lora = self.lora_section or LoraSection()
        # the train settings are checked before a fresh adapter replaces the current one
        train_section = build_section(TrainSection, {k: v for k, v in settings.items() if k in TRAIN_FIELDS}, "train")
        if say is not None:
            say(self.adapter_note(fresh=fresh, resume=settings.get("resume")))
        if fresh:
            self.model = inject(self.model, **{**lora_kwargs(lora), "seed": adapter_seed(lora, train_section)})
            self.lora_section, self.trained_by = lora, None
        callbacks = _live(settings.pop("callbacks", ()), live, background)
        progress = settings.pop("progress", not live)
        run = train(self.model, self.tokenizer, data, callbacks=callbacks, background=background,
                    progress=progress, **settings)
        return self._started(run, background)

    def check_data(self, data: Any, **settings: Any):
        """Which tokens of a few examples of ``data`` carry loss with the loaded tokenizer
        (:func:`lora_nb.data.check`; ``settings``: rows, format, train_on, max_length, split, columns).

        Example:
            >>> s.check_data("train.jsonl", train_on="assistant", rows=2)   # doctest: +SKIP
        """
        from ..data.doctor import check

        self.require_model()
        return check(self.tokenizer, data, **settings)

    @strict_flags
    def adapter_note(self, fresh: bool = False, resume: Optional[str] = None) -> str:
        """One line saying what training starts from: a fresh adapter, the adapter as the last run
        left it, the adapter as injected, or a run resumed from its checkpoint.

        Example:
            >>> Session().adapter_note(fresh=True)
            'fresh adapter: r=16, alpha=32, targets=all-linear'
        """
        if resume:
            return f"resuming run {Path(expand_user(resume)).name} from its last checkpoint"
        if fresh:
            return f"fresh adapter: {describe(self.lora_section or LoraSection())}"
        if self.trained_by is not None:
            return f"continuing the adapter of run {self.trained_by.name} (step {self.trained_by.step})"
        if self.lora_section is not None:
            return f"continuing the adapter injected with {describe(self.lora_section)} (not trained yet)"
        return "continuing the adapter on the model"

    def _started(self, run: Any, background: bool):
        self.runs.append(run)
        self.trained_by = run
        if background:
            self.active = run
        return run

    def stop(self):
        if self.active is None or not self.active.running:
            raise ConfigError("stop", problem="no run is training in the background")
        self.active.stop()
        return self.active

    def wait(self):
        if self.active is None:
            raise ConfigError("wait", problem="no run has been started in the background")
        return self.active.wait()

    def generate(self, prompts: Any, **kwargs: Any):
        from ..inference.generation import generate

        self.require_model()
        self.require_idle()
        return generate(self.model, self.tokenizer, prompts, **kwargs)

    def compare(self, prompts: Any, **kwargs: Any):
        from ..inference.generation import compare

        self.require_model(adapter=True)
        self.require_idle()
        return compare(self.model, self.tokenizer, prompts, **kwargs)

    @strict_flags
    def sweep(self, *, data: Any = None, live: bool = True, background: bool = False, **options: Any):
        """A sweep (lora_nb.sweep) on the loaded base: the last run's recipe (or the loaded model, the
        last inject's settings and ``data``) over the grid in ``options``; each point a fresh
        adapter. The model then carries the last point's adapter; the points join the session's runs.

        Example:
            >>> s.sweep(r=[4, 8], targets=["attention", "all-linear"], steps=50)   # doctest: +SKIP
        """
        from ..recipe.schema import DataSection
        from ..experiments.sweeps.sweep import Sweep

        self.require_model()
        self.require_idle()
        recipe = self.runs[-1].recipe if self.runs and self.runs[-1].recipe is not None else None
        if recipe is None:
            if data is None or self.model_section is None:
                raise ConfigError("data", problem="a sweep needs training data: data=PATH (or train once first: "
                                  "the sweep then starts from that run's recipe)")
            recipe = Recipe(model=self.model_section, lora=self.lora_section or LoraSection(),
                            data=DataSection(path=data))
        elif data is not None:
            recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, path=data))
        recipe = dataclasses.replace(recipe, output_dir=None)
        callbacks = list(options.pop("callbacks", ()))
        if live:
            from .sweep_view import SweepChart

            callbacks.append(SweepChart(controls=background))
        run_options = {k: options.pop(k) for k in ("eval_data", "metric", "progress") if k in options}
        result = Sweep(recipe, seeds=options.pop("seeds", 1), output_dir=options.pop("output_dir", None), **options)
        result.on_done(self.adopt)  # registered before it starts: a sweep that ends at once is kept too
        result.run((self.model, self.tokenizer), callbacks=callbacks, background=background, **run_options)
        if background:
            self.active = result
        return result

    def adopt(self, sweep: Any) -> None:
        """Take in an ended sweep: the base now carries its last point's adapter, and its points'
        runs join the session's (``%lora sweep`` and the panel's Sweep both end here)."""
        if sweep.model is not None:
            self.model, self.tokenizer = sweep.model, sweep.tokenizer
        trained = [p.run for p in sweep.points if p.run is not None]
        self.runs += trained
        if trained:
            self.trained_by, self.lora_section = trained[-1], trained[-1].recipe.lora

    def evaluate(self, data: Any, **kwargs: Any):
        """Score the current model on held-out ``data`` (lora_nb.evaluate); the score is stored
        with the run that trained the adapter, if one did."""
        from ..inference.evaluation import evaluate

        self.require_model()
        self.require_idle()
        return evaluate(self.model, self.tokenizer, data, run=self.trained_by, **kwargs)

    @strict_flags
    def save(self, folder: str, overwrite: bool = False) -> Path:
        from ..runs.adapters import save

        self.require_model(adapter=True)
        return save(self.model, folder, tokenizer=self.tokenizer, overwrite=overwrite)

    def merge(self, folder: str, **kwargs: Any) -> Path:
        from ..inference.merging import merge

        self.require_model(adapter=True)
        self.require_idle()
        return merge(self.model, folder, tokenizer=self.tokenizer, **kwargs)

    def push(self, repo_id: str, run: Any = None, **kwargs: Any):
        """lora_nb.push of ``run`` (a Run or run folder; default: this session's last run).

        Example:
            >>> Session().push("me/my-lora", run="runs/x", dry_run=True)  # doctest: +SKIP
        """
        from ..inference.publish import push

        if run is None:
            if not self.runs:
                raise ConfigError("run", problem="no run in this session yet: train one, or give run=RUN_DIR")
            run = self.runs[-1]
        self.require_idle()
        return push(run, repo_id, **kwargs)

    @strict_flags
    def run_recipe(self, recipe: Recipe, live: bool = True, *, on_loaded_base: bool = False, background: bool = False,
                   callbacks: Any = (), progress: Optional[bool] = None, say: Optional[Callable[[str], None]] = print):
        """Load, inject and train as ``recipe`` says (lora_nb.run, the one orchestrator), keeping
        model and run in the session. ``on_loaded_base``: adapt the model already loaded instead
        of loading ``recipe.model`` again (the panel's reruns). A recipe always trains a fresh
        adapter; ``say`` is told so first."""
        from ..experiments.pipeline import run

        self.require_idle()
        if say is not None:
            say(f"fresh adapter (a recipe always starts one): {describe(recipe.lora)}")
        base = None
        if on_loaded_base:
            self.require_model()
            base = (self.model, self.tokenizer)

        def keep(model: Any, tokenizer: Any) -> None:
            self.model, self.tokenizer = model, tokenizer
            self.model_section, self.lora_section = recipe.model, recipe.lora

        started = run(recipe, base=base, callbacks=_live(callbacks, live, background), background=background,
                      progress=not live if progress is None else progress, on_model=keep)
        return self._started(started, background)

    @strict_flags
    def resume(self, run: Optional[str] = None, *, mirror: Optional[str] = None, runs: str = "runs", live: bool = True,
               background: bool = False, callbacks: Any = (), say: Optional[Callable[[str], None]] = print):
        """:func:`lora_nb.resume` (the newest unfinished run, or ``run``): the base it reloads becomes the session's.

        Example:
            >>> Session().resume(runs="/nonexistent-lora_nb-runs", mirror="/nonexistent-lora_nb-mirror")
            nothing to resume: no killed, interrupted or stopped run with a checkpoint in /nonexistent-lora_nb-runs, \
/nonexistent-lora_nb-mirror
        """
        from ..experiments.resume import resume

        self.require_idle()

        def keep(model: Any, tokenizer: Any) -> None:
            self.model, self.tokenizer = model, tokenizer

        started = resume(run, mirror=mirror, runs=runs, callbacks=_live(callbacks, live, background),
                         background=background, progress=not live, on_model=keep, say=say)
        if started is not None:
            self.model_section, self.lora_section = started.recipe.model, started.recipe.lora
            self._started(started, background)
        return started

    def load_adapter(self, folder: str):
        """The adapter of the run in ``folder`` on the loaded base (replacing its adapter; none loaded: the run's).

        Example:
            >>> s.load_adapter("runs/20261128-101500-r4-attention-lr2e-4")   # doctest: +SKIP
        """
        from ..model.attach import load_adapter
        from ..runs.record import Run

        self.require_idle()
        run = Run.load(expand_user(folder))
        if self.model is None and run.recipe is not None:
            self.load(**dataclasses.asdict(run.recipe.model))
        self.require_model()
        base = self.model.unload() if hasattr(self.model, "peft_config") else self.model
        self.model = load_adapter(base, run.adapter_dir, trainable=True)
        self.lora_section, self.trained_by = (run.recipe.lora if run.recipe else None), run
        return run

    def recipe(self) -> Recipe:
        """The experiment so far: the last run's recipe. Before any run there is no data to put in a
        recipe, so it raises a ConfigError saying what to run first (and, with no model, to load one).

        Example:
            >>> session.recipe().train.steps   # doctest: +SKIP
            200
        """
        if self.runs:
            return self.runs[-1].recipe
        self.require_model()
        raise ConfigError("export", problem="needs training data: run %lora train data=... first (no run yet)")

    def export(self) -> str:
        """The session so far as a standalone transformers/peft/trl script."""
        from ..experiments.pipeline import to_script

        return to_script(self.recipe())

    def find_runs(self, root: Union[str, Path] = "runs", *, filter: Optional[str] = None,
                  limit: Optional[int] = None) -> list:
        """This session's runs and every run in ``root`` (other kernels', the CLI's), newest first;
        see :func:`lora_nb.runs.find.find_runs` for ``filter`` and ``limit``.

        Example:
            >>> Session().find_runs("/nonexistent-lora_nb-runs")
            []
        """
        from ..runs.find import find_runs

        return find_runs(root, filter=filter, limit=limit, runs=self.runs)

    def run_table(self, root: Union[str, Path] = "runs", *, filter: Optional[str] = None, limit: Optional[int] = None):
        """:meth:`find_runs` as a :class:`~lora_nb.runs.table.RunTable`: settings, metrics, loss curves."""
        from ..runs.table import RunTable

        return RunTable(self.find_runs(root, filter=filter, limit=limit))


def _live(callbacks: Any, live: bool, background: bool) -> list:
    """``callbacks`` plus, when ``live``, a LiveChart (with Stop / Save now for background runs)."""
    callbacks = list(callbacks)
    if live:
        from .live import LiveChart

        callbacks.append(LiveChart(controls=background))  # it shows itself once the trainer is built, in this thread
    return callbacks


def describe(lora: LoraSection) -> str:
    """An adapter's settings in one phrase: ``r=16, alpha=32, targets=attention``.

    Example:
        >>> describe(LoraSection(r=8, targets=["q_proj", "v_proj"], variant="dora"))
        'r=8, alpha=32, targets=[q_proj, v_proj], variant=dora'
    """
    targets = lora.targets if isinstance(lora.targets, str) else f"[{', '.join(map(str, lora.targets))}]"
    return f"r={lora.r}, alpha={lora.alpha:g}, targets={targets}" + (f", variant={lora.variant}"
                                                                     if lora.variant != "lora" else "")
