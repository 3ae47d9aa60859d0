"""Sweeps: one recipe trained over a grid of settings, each point a fresh adapter on one loaded base.

``sweep(recipe, r=[4, 8, 16], targets=["attention", "all-linear"], seeds=2)`` trains every
combination (seeds outermost: a stopped sweep has covered the grid once before it repeats a seed).
The base model is loaded once; each point puts a fresh adapter on it — the previous one is removed,
the base weights stay as they were — so N points cost N training runs and one load.

Everything a sweep makes is in one folder (default ``runs/sweep-<date-time>``): a normal run folder
per point, named after its settings (``r4-attention-s0``), and ``sweep.json`` — the grid, the points
in order, each one's status and results — rewritten atomically after every point, so a killed sweep
still says what finished (:meth:`Sweep.load` reads it back). :meth:`Sweep.to_script` exports the
sweep as a standalone script: the single-run script's code, run once per point.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import statistics
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

from ..core.errors import ConfigError, strict_flags
from ..core.files import atomic_write, is_taken, user_path
from ..recipe.arguments import recipe_base
from ..recipe.schema import SECTIONS, Recipe
from ..core.render import fmt, html_table, text_table
from ..runs.record import Run, training_run

# Settings every point shares, and why a sweep cannot vary them.
FIXED = {
    "model": "the points share one loaded base model: run one sweep per model",
    "train.resume": "every point is a new run",
    "train.seed": "use seeds=n: the points then train with train.seed, train.seed + 1, …",
}


def setting_key(key: str) -> str:
    """The dotted recipe setting a grid key names: ``lr`` is ``train.lr``; ``lora.r`` stays as it is.

    Example:
        >>> setting_key("lr"), setting_key("lora.r")
        ('train.lr', 'lora.r')
        >>> setting_key("rank")   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: rank: is not a setting a sweep can vary. Allowed: ... Did you mean 'r'?
    """
    dotted = {f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls)}
    if "." in key:
        section = key.split(".", 1)[0]
        if section not in SECTIONS:
            raise ConfigError(section, problem=f"unknown section (in {key!r})", allowed=list(SECTIONS))
        if key not in dotted:
            raise ConfigError(key, problem="unknown setting", allowed=[f.name for f in fields(SECTIONS[section])])
        found = [key]
    else:
        found = sorted(d for d in dotted if d.split(".", 1)[1] == key)
    if len(found) > 1:
        raise ConfigError(key, problem=f"is a setting of several sections: write {' or '.join(found)}")
    if not found:
        free = sorted({d.split(".", 1)[1] for d in dotted if not _fixed(d)})
        raise ConfigError(key, problem="is not a setting a sweep can vary", allowed=free)
    if _fixed(found[0]):
        raise ConfigError(key, problem=f"cannot vary in a sweep: {_fixed(found[0])}")
    return found[0]


def _fixed(dotted: str) -> Optional[str]:
    return FIXED.get(dotted) or FIXED.get(dotted.split(".", 1)[0])


class Spread(NamedTuple):
    """A metric over a point's seeds: their mean and standard deviation (None from a single seed)."""

    mean: float
    spread: Optional[float]

    def __str__(self) -> str:
        return fmt(self.mean) if self.spread is None else f"{fmt(self.mean)} ± {fmt(self.spread)}"


@dataclass
class Point:
    """One point of a sweep: its grid settings, its seed, its recipe and, once trained, its Run.

    ``status``: pending, running, then the run's (finished, stopped, interrupted, diverged, failed).
    """

    label: str
    settings: dict
    seed: int
    recipe: Recipe = field(repr=False)
    run: Optional[Run] = None
    status: str = "pending"
    score: Optional[float] = None
    trainable_params: Optional[int] = None
    message: str = ""

    def metrics(self) -> dict:
        """Final loss, eval loss, eval score, tokens/s (mean), trainable params, peak memory (MiB)."""
        history = self.run.history if self.run is not None else []
        memory = [h["memory_mb"] for h in history if h.get("memory_mb") is not None]
        last = self.run.last if self.run is not None else (lambda key: None)
        return {"final loss": last("loss"), "eval loss": last("eval_loss"), "eval score": self.score,
                "tokens/s": self.run.mean("tokens_per_s") if self.run is not None else None, "trainable params": self.trainable_params,
                "peak MiB": max(memory) if memory else None}

    def record(self) -> dict:
        """The point as plain data, for ``sweep.json``."""
        return {"label": self.label, "settings": self.settings, "seed": self.seed, "status": self.status,
                "message": self.message, **self.metrics()}


class Sweep:
    """A recipe over a grid of settings: the plan (``points``), then the runs and their results.

    Grid keys are recipe settings, bare where the name is unique (``r``, ``lr``, ``targets``,
    ``steps``) or dotted (``**{"lora.r": [4, 8]}``); a list gives the values to try, anything else
    one value for every point (``targets=[["q_proj", "v_proj"]]`` is one list-valued point). Every
    point's recipe is built and checked here, before anything trains. :func:`sweep` builds one and
    runs it; ``Sweep(...).to_script()`` exports one without training.

    Example:
        >>> s = Sweep(recipe, r=[4, 8], lr=[1e-4, 2e-4], seeds=2)   # doctest: +SKIP
        >>> [p.label for p in s.points][:2]                         # doctest: +SKIP
        ['r4-lr1e-4-s0', 'r4-lr2e-4-s0']
    """

    def __init__(self, recipe: Recipe, *, seeds: int = 1, output_dir: Optional[str] = None, **grid: Any) -> None:
        if not isinstance(recipe, Recipe):
            raise ConfigError("recipe", type(recipe).__name__,
                              problem="must be a lora_nb.Recipe (Recipe.from_yaml, Recipe.from_dict)")
        if recipe.train.resume:
            raise ConfigError("train.resume", recipe.train.resume, problem="a sweep starts new runs: leave it empty")
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError("seeds", seeds, problem="must be a positive whole number of seeds per point")
        self.recipe, self.seeds = recipe, seeds
        self.grid = {key: _values(key, value) for key, value in grid.items()}
        self.dir = user_path(output_dir or recipe.output_dir or _new_folder())
        self.points = _plan(recipe, self.grid, seeds, self.dir)
        self.status = "pending"
        self.error: Optional[BaseException] = None
        self.model: Any = None  # the loaded base, carrying the last point's adapter once a point has trained
        self.tokenizer: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._active: Optional[Point] = None
        self._thread: Optional[threading.Thread] = None
        self._on_point: list[Callable] = []
        self._on_done: list[Callable] = []

    # --- running -------------------------------------------------------------------------------

    @strict_flags
    def run(self, base: Optional[tuple] = None, *, eval_data: Any = None, metric: Any = "exact_match",
            callbacks: Sequence[Any] = (), progress: Optional[bool] = None, background: bool = False) -> "Sweep":
        """Train every point in turn (see :func:`sweep` for the arguments). Returns the sweep.

        Example:
            >>> Sweep(recipe, r=[4, 8]).run(eval_data="test.jsonl")   # doctest: +SKIP
        """
        if self.status != "pending":
            raise ConfigError("sweep", str(self.dir), problem=f"has run already ({self.status}): start a new one")
        if eval_data is not None:
            from ..inference.evaluation import METRICS

            if not callable(metric) and metric not in METRICS:
                raise ConfigError("metric", metric, allowed=METRICS, problem="unknown metric (or pass a function "
                                  "(prediction, reference) -> score)")
        if is_taken(self.dir):
            raise ConfigError("output_dir", str(self.dir), problem="the folder is not empty and lora_nb never "
                              "overwrites what it did not make; choose a new folder")
        model, tokenizer = base if base is not None else _load(self.recipe)
        busy = training_run(model)
        if busy is not None:
            raise ConfigError("base", problem=f"is training in run {busy.name}: stop it (run.stop(), %lora stop) or "
                              "wait for it (run.wait(), %lora wait) first")
        _check_points(self.points, model)
        self.model, self.tokenizer = model, tokenizer
        self.dir.mkdir(parents=True, exist_ok=True)
        self.status = "running"
        self._write()
        for callback in callbacks:  # in the calling thread, so a notebook view shows under its own cell
            begin = getattr(callback, "begin_sweep", None)
            if begin is not None:
                begin(self)
        work = functools.partial(self._loop, eval_data, metric, list(callbacks), progress)
        if background:
            self._thread = threading.Thread(target=work, name=f"lora_nb {self.dir.name}", daemon=True)
            self._thread.start()
            return self
        work()
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        """Stop the point training now (at the end of its step, its adapter saved) and end the sweep
        there; finished points are kept. Safe to call from another thread (a Stop button)."""
        with self._lock:
            self._stop.set()
            if self._active is not None and self._active.run is not None:
                self._active.run.stop()

    @property
    def running(self) -> bool:
        """True while a background sweep's thread is still training."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> "Sweep":
        """Block until a background sweep ends (or ``timeout`` seconds pass); re-raise its error if it failed.

        Example:
            >>> s = lora_nb.sweep(recipe, r=[4, 8], background=True)   # doctest: +SKIP
            >>> s.wait().status                                        # doctest: +SKIP
            'finished'
        """
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None and not self.running:
            raise self.error
        return self

    def on_point(self, fn: Callable[["Sweep", Point], None]) -> None:
        """Call ``fn(sweep, point)`` after each point, once its result is in ``sweep.json``."""
        self._on_point.append(fn)

    def on_done(self, fn: Callable[["Sweep"], None]) -> None:
        """Call ``fn(sweep)`` once the sweep has ended (finished, stopped, interrupted or failed)."""
        self._on_done.append(fn)

    def _loop(self, eval_data: Any, metric: Any, callbacks: list, progress: Optional[bool]) -> None:
        trained: list = []
        try:
            for number, point in enumerate(self.points, 1):
                if self._stop.is_set():
                    break
                if not any(getattr(c, "shows_progress", False) for c in callbacks):  # a view names the point itself
                    print(f"sweep point {number}/{len(self.points)}: {point.label}", flush=True)
                _restore(trained)  # base weights the last point trained in place (lora.bias)
                trained = self._train(point, callbacks, progress)
                if point.status == "finished" and eval_data is not None:
                    point.score = self._evaluate(point, eval_data, metric, callbacks, progress)
                self._write()
                for fn in self._on_point:
                    fn(self, point)
                if point.status == "interrupted":
                    break
            stopped = self._stop.is_set() or any(p.status in ("pending", "stopped") for p in self.points)
            interrupted = any(p.status == "interrupted" for p in self.points)
            self.status = "interrupted" if interrupted else "stopped" if stopped else "finished"
        except KeyboardInterrupt:
            self.status = "interrupted"
            self._settle("interrupted", "")
        except BaseException as e:  # noqa: BLE001 - kept on the sweep; run() re-raises it, wait() too
            self.status, self.error = "failed", e
            self._settle("failed", f"{type(e).__name__}: {e}")
        finally:
            self._active = None
            self._finish()

    def _train(self, point: Point, callbacks: list, progress: Optional[bool]) -> list:
        """Train one point on the base; returns the base parameters it trained in place, with their values before."""
        from .pipeline import run

        trained: list = []

        def adapted(model: Any, tokenizer: Any) -> None:
            self.model = model
            point.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
            trained.extend(_trained_base(model))

        _reset_peak_memory()
        with self._lock:
            self._active, point.status = point, "running"
        self._write()
        run(point.recipe, base=(self.model, self.tokenizer), callbacks=[_point_started(self), *callbacks],
            progress=progress, on_model=adapted)
        point.status = point.run.status if point.run is not None else "failed"
        return trained

    def _started(self, run: Run) -> None:
        """The active point's run has started training (its Run exists now): a stop asked meanwhile reaches it."""
        with self._lock:
            self._active.run = run
            if self._stop.is_set():
                run.stop()

    def _evaluate(self, point: Point, data: Any, metric: Any, callbacks: list, progress: Optional[bool]) -> float:
        from ..inference.evaluation import evaluate

        if progress is None:
            progress = not any(getattr(c, "shows_progress", False) for c in callbacks)
        return evaluate(self.model, self.tokenizer, data, metric=metric, run=point.run, progress=progress).score

    def _settle(self, status: str, message: str) -> None:
        """The point that was training when the sweep ended early takes ``status``."""
        if self._active is not None and self._active.status == "running":
            self._active.status, self._active.message = status, message

    def _finish(self) -> None:
        """Record the sweep's end (sweep.json, the overlaid chart), say how it went, call on_done."""
        from ..core.charts import save_png

        self._write()
        if any(p.run is not None and p.run.history for p in self.points):
            save_png(self.figure(), self.dir / "loss.png")
        done = sum(p.status == "finished" for p in self.points)
        best = self.best
        line = f"sweep {self.status}: {done}/{len(self.points)} points finished in {self.dir}"
        if best is not None:
            name, value = _criterion([best.metrics()])
            line += f"; best {best.label} ({name} {fmt(value)})"
        print(line, flush=True)
        for fn in self._on_done:
            fn(self)

    def _write(self) -> None:
        record = {"status": self.status, "seeds": self.seeds, "grid": self.grid, "recipe": self.recipe.to_dict(),
                  "points": [p.record() for p in self.points]}
        atomic_write(self.dir / "sweep.json", json.dumps(record, indent=1))

    # --- results -------------------------------------------------------------------------------

    def table(self) -> list[dict]:
        """The results, one row per point — per setting, over its seeds, when ``seeds > 1`` (values
        then :class:`Spread`: mean ± standard deviation) — with the settings that vary, status, final
        loss, eval loss, eval score, tokens/s, trainable params and peak memory; ``best`` marks
        the best row (highest eval score, else lowest eval loss, else lowest final loss, among
        finished rows). Columns no row has a value for are left out.

        Example:
            >>> lora_nb.sweep(recipe, r=[4, 8]).table()[0]   # doctest: +SKIP
            {'best': '★', 'r': 4, 'status': 'finished', 'final loss': 0.41, ...}
        """
        varying = [key for key, values in self.grid.items() if len(values) > 1]
        rows = []
        for group in self._groups():
            row: dict = {"best": ""}
            row.update({key: _shown(group[0].settings[key]) for key in varying})
            if self.seeds > 1:
                row["seeds"] = len(group)
            statuses = [p.status for p in group]
            row["status"] = statuses[0] if len(set(statuses)) == 1 else ", ".join(
                f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
            metrics = [p.metrics() for p in group]
            for name in metrics[0]:
                values = [m[name] for m in metrics if m[name] is not None]
                row[name] = _combine(values) if self.seeds > 1 else (values[0] if values else None)
            rows.append(row)
        best = self._best_group()
        if best is not None:
            rows[best]["best"] = "★"
        empty = [name for name in (rows[0] if rows else {}) if name not in ("best", "status")
                 and name not in varying and all(r[name] is None for r in rows)]
        return [{k: v for k, v in row.items() if k not in empty} for row in rows]

    @property
    def best(self) -> Optional[Point]:
        """The best finished point (with seeds: the best seed of the best setting), or None yet."""
        index = self._best_group()
        if index is None:
            return None
        group = self._groups()[index]
        name, _ = _criterion([p.metrics() for p in group])
        ranked = [p for p in group if p.metrics()[name] is not None]
        return (max if name == "eval score" else min)(ranked, key=lambda p: p.metrics()[name])

    def figure(self):
        """Every point's loss curves overlaid, as a matplotlib Figure."""
        from ..core.charts import loss_figure

        return loss_figure([(p.label, p.run.history) for p in self.points if p.run is not None],
                           title=f"{self.dir.name} ({self.status})")

    def to_script(self) -> str:
        """The sweep as a standalone script: the single-run script's code (:func:`lora_nb.to_script`)
        run once per point with that point's settings, into ``<folder>-script/<label>``.

        Example:
            >>> open("sweep_lora.py", "w").write(Sweep(recipe, r=[4, 8]).to_script())   # doctest: +SKIP
        """
        from ..export.script import render_sweep_script

        return render_sweep_script([(p.label, p.recipe) for p in self.points], f"{self.dir}-script")

    @classmethod
    def load(cls, folder: str | Path) -> "Sweep":
        """Reopen a sweep from its folder (``sweep.json`` and its points' run folders), finished or not.

        A point whose process died while it trained shows as ``killed`` (see :meth:`Run.load`).

        Example:
            >>> print(Sweep.load("runs/sweep-20261128-101500"))   # doctest: +SKIP
        """
        folder = user_path(folder)
        if not (folder / "sweep.json").is_file():
            raise ConfigError("sweep", str(folder), problem="holds no sweep.json")
        info = json.loads((folder / "sweep.json").read_text())
        sweep = cls(Recipe.from_dict(info["recipe"]), seeds=info["seeds"], output_dir=str(folder), **info["grid"])
        records = {r["label"]: r for r in info["points"]}
        for point in sweep.points:
            record = records.get(point.label, {})
            point.status, point.message = record.get("status", "pending"), record.get("message", "")
            point.score, point.trainable_params = record.get("eval score"), record.get("trainable params")
            if (folder / point.label / "run.json").exists():
                point.run = Run.load(folder / point.label)
                if point.status == "running":
                    point.status = point.run.status
        sweep.status = "killed" if any(p.status == "killed" for p in sweep.points) else info["status"]
        return sweep

    def _groups(self) -> list[list[Point]]:
        """The points by setting (their seeds together), in grid order."""
        groups: dict[str, list[Point]] = {}
        for point in self.points:
            groups.setdefault(json.dumps(point.settings, sort_keys=True), []).append(point)
        return list(groups.values())

    def _best_group(self) -> Optional[int]:
        done = [(i, g) for i, g in enumerate(self._groups()) if all(p.status == "finished" for p in g)]
        if not done:
            return None
        means = [(i, {name: _mean([p.metrics()[name] for p in g]) for name in ("eval score", "eval loss", "final loss")})
                 for i, g in done]
        name, _ = _criterion([m for _, m in means])
        scored = [(i, m[name]) for i, m in means if m[name] is not None]
        if not scored:
            return None
        return (max if name == "eval score" else min)(scored, key=lambda item: item[1])[0]

    def _title(self) -> str:
        done = sum(p.status == "finished" for p in self.points)
        return f"sweep {self.dir} ({self.status}, {done}/{len(self.points)} points finished)"

    def __str__(self) -> str:
        rows = self.table()
        return text_table(list(rows[0]), [list(r.values()) for r in rows], title=self._title()) if rows else self._title()

    def __repr__(self) -> str:
        return f"Sweep({str(self.dir)!r}, status={self.status!r}, points={len(self.points)})"

    def _repr_html_(self) -> str:
        import base64

        from ..core.charts import save_png

        rows = self.table()
        table = html_table(list(rows[0]), [list(r.values()) for r in rows], title=self._title()) if rows else ""
        if not any(p.run is not None and p.run.history for p in self.points):
            return table
        img = base64.b64encode(save_png(self.figure())).decode()
        return f"{table}<img src='data:image/png;base64,{img}'/>"


@recipe_base
@strict_flags
def sweep(recipe: Recipe, *, base: Any = None, seeds: int = 1, eval_data: Any = None,
          metric: Any = "exact_match", callbacks: Sequence[Any] = (), progress: Optional[bool] = None,
          background: bool = False, output_dir: Optional[str] = None, **grid: Any) -> Sweep:
    """Train ``recipe`` once per point of ``grid`` (the Cartesian product of its values), each
    point a fresh adapter on one loaded base, and return the :class:`Sweep` with its table.

    ``grid``: recipe settings and the values to try, bare (``r=[4, 8]``, ``lr=[1e-4, 2e-4]``,
    ``targets=["attention", "all-linear"]``) or dotted (``**{"lora.dropout": [0, 0.1]}``); every
    value is checked before anything trains. ``seeds``: train each point with ``train.seed``,
    ``train.seed + 1``, …; the table then gives mean ± spread. ``base``: a loaded ``(model,
    tokenizer)`` (an adapter on it is replaced), or a Hub name or folder loaded instead of
    ``recipe.model.name``; None loads ``recipe.model`` once. ``eval_data``:
    held-out rows scored after each finished point with :func:`lora_nb.inference.evaluation.evaluate` and
    ``metric`` (exact_match, contains, token_accuracy, or a function).
    ``callbacks`` go to every point's training; one with a ``begin_sweep(sweep)`` method is handed
    the sweep first (the notebook's SweepChart overlays all points in one live chart).
    ``output_dir``: the sweep's folder, new or empty (default ``recipe.output_dir``, else
    ``runs/sweep-<date-time>``); each point is a normal run folder in it, ``sweep.json`` beside them.

    Stopping — :meth:`Sweep.stop`, or Ctrl-C / the kernel's interrupt — stops the point in
    training (its adapter saved) and ends the sweep there; finished points are kept.
    ``background=True`` trains in a thread and returns at once; :meth:`Sweep.wait` joins it.

    Example:
        >>> s = lora_nb.sweep(recipe, r=[4, 8, 16], targets=["attention", "all-linear"], seeds=2)   # doctest: +SKIP
        >>> print(s)                                                                                # doctest: +SKIP
        >>> s.best.run.adapter_dir                                                                  # doctest: +SKIP
    """
    return Sweep(recipe, seeds=seeds, output_dir=output_dir, **grid).run(
        base, eval_data=eval_data, metric=metric, callbacks=callbacks, progress=progress, background=background)


def _values(key: str, value: Any) -> list:
    """A grid entry's values: a list (or tuple, range) is the values to try; anything else one value."""
    values = list(value) if isinstance(value, (list, tuple, range)) else [value]
    if not values:
        raise ConfigError(key, values, problem="needs at least one value to try")
    for i, v in enumerate(values):
        if v in values[:i]:
            raise ConfigError(key, v, problem="is listed twice")
    return values


def _plan(recipe: Recipe, grid: dict, seeds: int, folder: Path) -> list[Point]:
    """Every point's recipe, built with Recipe.from_dict so a bad value is refused naming its setting."""
    keys = {key: setting_key(key) for key in grid}
    for i, (key, dotted) in enumerate(keys.items()):
        earlier = [k for k in list(keys)[:i] if keys[k] == dotted]
        if earlier:
            raise ConfigError(key, problem=f"names the same setting ({dotted}) as {earlier[0]!r}")
    varying = [key for key, values in grid.items() if len(values) > 1]
    parts = {key: _labels(keys[key], grid[key]) for key in varying}
    points, labels = [], {}
    for index in range(seeds):
        for combination in itertools.product(*grid.values()):
            settings = dict(zip(grid, combination))
            raw = recipe.to_dict()
            for key, value in settings.items():
                section, name = keys[key].split(".", 1)
                raw[section][name] = value
            raw["train"]["seed"] = recipe.train.seed + index
            label = "-".join([parts[key][grid[key].index(settings[key])] for key in varying] + [f"s{index}"])
            if label in labels:
                raise ConfigError("grid", label, problem=f"two points would share this folder name "
                                  f"({labels[label]} and {settings}): make the values differ in letters or digits")
            labels[label] = settings
            raw["output_dir"] = str(folder / label)
            points.append(Point(label, settings, raw["train"]["seed"], Recipe.from_dict(raw)))
    return points


def _labels(dotted: str, values: list) -> list[str]:
    """Each value's part of the points' folder names; the values' numbers (path1, path2) where
    their names would coincide once shortened to file-name-safe characters.

    Example:
        >>> _labels("lora.r", [4, 8]), _labels("data.path", ["a/x.jsonl", "a x.jsonl"])
        (['r4', 'r8'], ['path1', 'path2'])
    """
    named = [_label(dotted, value) for value in values]
    if len(set(named)) == len(named):
        return named
    return [f"{dotted.split('.', 1)[1]}{i}" for i in range(1, len(values) + 1)]


def _label(dotted: str, value: Any) -> str:
    """A setting's value in a few file-name-safe characters: r4, lr1e-4, attention, packing-true.

    Example:
        >>> _label("lora.r", 4), _label("train.lr", 1e-4), _label("lora.targets", ["q_proj", "v_proj"])
        ('r4', 'lr1e-4', 'q_proj+v_proj')
    """
    name = dotted.split(".", 1)[1]
    if isinstance(value, bool) or value is None:
        text = f"{name}-{str(value).lower()}"
    elif isinstance(value, (int, float)):
        text = name + _number(value)
    elif isinstance(value, list):
        text = "+".join(map(str, value))
    elif isinstance(value, dict):
        text = "-".join(f"{k}{v}" for k, v in value.items())
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("._")[:40] or name


def _number(value: float) -> str:
    if isinstance(value, float) and value and abs(value) < 1e-2:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{value:g}"


def _new_folder() -> str:
    base = Path("runs") / datetime.now().strftime("sweep-%Y%m%d-%H%M%S")
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return str(folder)


def _load(recipe: Recipe) -> tuple:
    from ..model.loading import load
    from ..recipe.schema import model_kwargs

    return load(recipe.model.name, **model_kwargs(recipe.model))


def _check_points(points: list[Point], model: Any) -> None:
    """What only the loaded base can tell, checked before any point trains: the targets each
    point's adapter would get, and its extra SFTConfig settings."""
    from ..model.injection import lora_config_kwargs
    from ..recipe.schema import lora_kwargs
    from ..training.sft_settings import check_sft_overrides

    seen: list = []
    for point in points:
        section = (point.recipe.lora, point.recipe.train.sft)
        if section not in seen:
            seen.append(section)
            lora_config_kwargs(model, **lora_kwargs(point.recipe.lora))
            check_sft_overrides(point.recipe.train.sft)


def _point_started(sweep: Sweep):
    """A RunCallback that hands each point's Run to the sweep as training starts, so that
    :meth:`Sweep.stop` reaches it (built here: transformers is imported when a sweep trains)."""
    from ..training.callbacks import RunCallback

    class PointStarted(RunCallback):
        def on_train_begin(self, args, state, control, **kw):
            sweep._started(self.run)

    return PointStarted()


def _trained_base(model: Any) -> list:
    """(parameter, copy) of each base weight the adapter trains in place — biases, with ``lora.bias``
    all or lora_only — so the next point can start from the base as it was."""
    return [(p, p.detach().clone()) for name, p in model.named_parameters()
            if p.requires_grad and "lora_" not in name and "modules_to_save" not in name]


def _restore(trained: list) -> None:
    if trained:
        import torch

        with torch.no_grad():
            for param, saved in trained:
                param.copy_(saved)


def _reset_peak_memory() -> None:
    """Each point's peak memory is its own: the GPU's peak counter starts again."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _shown(value: Any) -> Any:
    return ", ".join(map(str, value)) if isinstance(value, list) else value


def _mean(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _combine(values: list) -> Optional[Spread]:
    if not values:
        return None
    return Spread(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


def _criterion(metrics: list[dict]) -> tuple[str, Optional[float]]:
    """Which metric ranks points — eval score when any has one, else eval loss, else final loss — and the first's value."""
    for name in ("eval score", "eval loss", "final loss"):
        if any(m.get(name) is not None for m in metrics):
            value = metrics[0][name]
            return name, value.mean if isinstance(value, Spread) else value
    return "final loss", None
