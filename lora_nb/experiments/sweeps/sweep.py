"""The Sweep: a recipe over a grid of settings, planned, run (in this thread or a background
one), stopped, reopened from its folder, shown as a table, exported as a script; and :func:`sweep`,
which builds one and runs it. The package's docstring (:mod:`lora_nb.experiments.sweeps`) says
what a sweep makes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ...core.errors import ConfigError, check_positive, strict_flags
from ...core.quiet import quietly
from ...core.files import is_taken, user_path
from ...recipe.arguments import recipe_base
from ...recipe.schema import Recipe
from ...runs.background import Background
from ...runs.busy import check_not_training
from ...runs.folders import timestamped_folder
from . import ranking, render
from .base import check_points, load_base
from .grid import grid_values
from .plan import Point, plan_points
from .runner import PointRunner
from .store import read_record, restore_points, write_record


class Sweep(Background):
    """A recipe over a grid of settings: the plan (``points``), then the runs and their results.

    Grid keys are recipe settings, bare where the name is unique (``r``, ``lr``, ``targets``,
    ``steps``) or dotted (``**{"lora.r": [4, 8]}``); a list gives the values to try, anything else
    one value for every point (``targets=[["q_proj", "v_proj"]]`` is one list-valued point). Every
    point's recipe is built and checked here, before anything trains. :func:`sweep` builds one and
    runs it; ``Sweep(...).to_script()`` exports one without training. A sweep run with
    ``background=True`` has the background API (:meth:`stop`, :meth:`wait`, :meth:`on_done`,
    :attr:`running`) of :class:`lora_nb.runs.background.Background`.

    Example:
        >>> s = Sweep(recipe, r=[4, 8], lr=[1e-4, 2e-4], seeds=2)
        >>> [p.label for p in s.points][:2]
        ['r4-lr1e-4-s0', 'r4-lr2e-4-s0']
    """

    def __init__(self, recipe: Recipe, *, seeds: int = 1, output_dir: Optional[str] = None, **grid: Any) -> None:
        super().__init__()
        if not isinstance(recipe, Recipe):
            raise ConfigError("recipe", type(recipe).__name__,
                              problem="must be a lora_nb.Recipe (Recipe.from_yaml, Recipe.from_dict)")
        if recipe.train.resume:
            raise ConfigError("train.resume", recipe.train.resume, problem="a sweep starts new runs: leave it empty")
        check_positive("seeds", seeds, of="seeds per point")
        self.recipe, self.seeds = recipe, seeds
        self.grid = {key: grid_values(key, value) for key, value in grid.items()}
        self.dir = user_path(output_dir or recipe.output_dir or timestamped_folder("sweep-"))
        self.points = plan_points(recipe, self.grid, seeds, self.dir)
        self.status = "pending"
        self.model: Any = None  # the loaded base, carrying the last point's adapter once a point has trained
        self.tokenizer: Any = None
        self.runner = PointRunner(self)

    # --- running -------------------------------------------------------------------------------

    @strict_flags
    def run(self, base: Optional[tuple] = None, *, eval_data: Any = None, metric: Any = "exact_match",
            callbacks: Sequence[Any] = (), progress: Optional[bool] = None, background: bool = False) -> "Sweep":
        """Train every point in turn (see :func:`sweep` for the arguments). Returns the sweep.

        Example:
            >>> Sweep(recipe, r=[4, 8]).run(eval_data="test.jsonl")  # doctest: +SKIP
        """
        if self.status != "pending":
            raise ConfigError("sweep", str(self.dir), problem=f"has run already ({self.status}): start a new one")
        if eval_data is not None:
            from ...inference.evaluation import METRICS

            if not callable(metric) and metric not in METRICS:
                raise ConfigError("metric", metric, allowed=METRICS, problem="unknown metric (or pass a function "
                                  "(prediction, reference) -> score)")
        if is_taken(self.dir):
            raise ConfigError("output_dir", str(self.dir), problem="the folder is not empty and lora_nb never "
                              "overwrites what it did not make; choose a new folder")
        model, tokenizer = base if base is not None else load_base(self.recipe)
        check_not_training(model, key="base")
        check_points(self.points, model)
        self.model, self.tokenizer = model, tokenizer
        self.dir.mkdir(parents=True, exist_ok=True)
        self.status = "running"
        self.save()
        for callback in callbacks:  # in the calling thread, so a notebook view shows under its own cell
            begin = getattr(callback, "begin_sweep", None)
            if begin is not None:
                begin(self)
        work = functools.partial(self.runner.run_points, eval_data, metric, list(callbacks), progress)
        if background:
            self.start(work)
            return self
        work()
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        """Stop the point training now (at the end of its step, its adapter saved) and end the sweep
        there; finished points are kept. Safe to call from another thread (a Stop button).

        Example:
            >>> s = lora_nb.sweep(recipe, r=[4, 8], background=True); s.stop(); s.wait().status  # doctest: +ELLIPSIS
            sweep point 1/2: r4-s0
            stopped at step ..., adapter saved in runs/sweep-.../r4-s0/adapter...
            sweep stopped: 0/2 points finished in runs/sweep-...
            'stopped'
        """
        with self.runner.lock:
            super().stop()
            self.runner.stop_point()

    def on_point(self, fn: Callable[["Sweep", Point], None]) -> None:
        """Call ``fn(sweep, point)`` after each point, once its result is in ``sweep.json``.

        Example:
            >>> s = Sweep(recipe, r=[4, 8])
            >>> s.on_point(lambda s, point: print(point.label, point.status))
        """
        self.runner.after_point.append(fn)

    def save(self) -> None:
        """Write ``sweep.json`` (status, grid, recipe, each point's result) atomically."""
        write_record(self.dir, self.status, self.seeds, self.grid, self.recipe, self.points)

    # --- results -------------------------------------------------------------------------------

    def table(self) -> list[dict]:
        """The results, one row per point — per setting, over its seeds, when ``seeds > 1`` (values
        then :class:`~lora_nb.experiments.sweeps.ranking.Spread`: mean ± standard deviation) — with
        the settings that vary, status, final loss, eval loss, eval score, tokens/s, trainable params
        and peak memory; ``best`` marks the best row (highest eval score, else lowest eval loss, else
        lowest final loss, among finished rows). Columns no row has a value for are left out.

        Example:
            >>> lora_nb.sweep(recipe, r=[4, 8]).table()[0]  # doctest: +SKIP
            {'best': '★', 'r': 4, 'status': 'finished', 'final loss': 0.41, ...}
        """
        return ranking.results(self.points, self.grid, self.seeds)

    @property
    def best(self) -> Optional[Point]:
        """The best finished point (with seeds: the best seed of the best setting), or None yet."""
        return ranking.best_point(self.points)

    def figure(self):
        """Every point's loss curves overlaid, as a matplotlib Figure."""
        return render.figure(self.points, f"{self.dir.name} ({self.status})")

    @quietly()
    def to_script(self) -> str:
        """The sweep as a standalone script: the single-run script's code (:func:`lora_nb.to_script`)
        run once per point with that point's settings, into ``<folder>-script/<label>``.

        Example:
            >>> _ = Path("sweep_lora.py").write_text(Sweep(recipe, r=[4, 8]).to_script())
        """
        from ...export.script import render_sweep_script

        return render_sweep_script([(p.label, p.recipe) for p in self.points], f"{self.dir}-script")

    @classmethod
    def load(cls, folder: str | Path) -> "Sweep":
        """Reopen a sweep from its folder (``sweep.json`` and its points' run folders), finished or not.

        A point whose process died while it trained shows as ``killed`` (see :meth:`Run.load`).

        Example:
            >>> print(Sweep.load("runs/sweep-20261128-101500"))  # doctest: +SKIP
        """
        folder = user_path(folder)
        info = read_record(folder)
        sweep = cls(Recipe.from_dict(info["recipe"]), seeds=info["seeds"], output_dir=str(folder), **info["grid"])
        sweep.status = restore_points(sweep.points, info, folder)
        return sweep

    def __str__(self) -> str:
        return render.as_text(self.table(), render.title(self.dir, self.status, self.points))

    def __repr__(self) -> str:
        return f"Sweep({str(self.dir)!r}, status={self.status!r}, points={len(self.points)})"

    def _repr_html_(self) -> str:
        return render.as_html(self.table(), render.title(self.dir, self.status, self.points), self.points,
                              f"{self.dir.name} ({self.status})")


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
        >>> s = lora_nb.sweep(recipe, r=[4, 8], targets=["attention"])  # doctest: +ELLIPSIS
        sweep point 1/2: r4-s0
        finished 2 steps, final loss ..., adapter saved in runs/sweep-.../r4-s0/adapter...
        sweep point 2/2: r8-s0
        ...
        sweep finished: 2/2 points finished in runs/sweep-...; best ...
        >>> print(s)  # doctest: +ELLIPSIS
        sweep runs/sweep-... (finished, 2/2 points finished)
        best  r  status    final loss  tokens/s  trainable params  peak MiB
        ...
        >>> s.best.run.adapter_dir  # doctest: +ELLIPSIS
        PosixPath('runs/sweep-.../r...-s0/adapter')
    """
    return Sweep(recipe, seeds=seeds, output_dir=output_dir, **grid).run(
        base, eval_data=eval_data, metric=metric, callbacks=callbacks, progress=progress, background=background)
