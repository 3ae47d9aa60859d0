"""Training a sweep's points in turn: each a fresh adapter on the shared base, evaluated when
finished, recorded in ``sweep.json``; a stop or Ctrl-C ends the sweep at the point in training."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from ...core.errors import strict_flags
from ...core.render import fmt
from ...runs.record import Run
from .base import reset_peak_memory, restore, trained_base
from .plan import Point
from .ranking import criterion


class PointRunner:
    """The loop over a :class:`~lora_nb.experiments.sweeps.sweep.Sweep`'s points (the sweep's
    ``run`` calls :meth:`run_points`, in its thread or a background one).

    ``active``: the point training now. ``lock`` guards it against a stop from another thread:
    :meth:`lora_nb.experiments.sweeps.sweep.Sweep.stop` holds it while it stops the point.
    ``after_point``: ``fn(sweep, point)`` called after each point, once its result is saved.

    Example:
        >>> runner = PointRunner(sweep); runner.run_points(None, "exact_match", [], None)   # doctest: +SKIP
    """

    def __init__(self, sweep: Any) -> None:
        self.sweep = sweep
        self.lock = threading.Lock()
        self.active: Optional[Point] = None
        self.after_point: list[Callable] = []

    def stop_point(self) -> None:
        """Stop the point training now, if its run has started (the caller holds :attr:`lock`)."""
        if self.active is not None and self.active.run is not None:
            self.active.run.stop()

    @strict_flags
    def run_points(self, eval_data: Any, metric: Any, callbacks: list, progress: Optional[bool]) -> None:
        """Train every point in turn, then record how the sweep ended; an error is kept on the sweep."""
        s = self.sweep
        trained: list = []
        try:
            for number, point in enumerate(s.points, 1):
                if s.stop_requested:
                    break
                if not any(getattr(c, "shows_progress", False) for c in callbacks):  # a view names the point itself
                    print(f"sweep point {number}/{len(s.points)}: {point.label}", flush=True)
                restore(trained)  # base weights the last point trained in place (lora.bias)
                trained = self.train(point, callbacks, progress)
                if point.status == "finished" and eval_data is not None:
                    point.score = self.evaluate(point, eval_data, metric, callbacks, progress)
                s.save()
                for fn in self.after_point:
                    fn(s, point)
                if point.status == "interrupted":
                    break
            stopped = s.stop_requested or any(p.status in ("pending", "stopped") for p in s.points)
            interrupted = any(p.status == "interrupted" for p in s.points)
            s.status = "interrupted" if interrupted else "stopped" if stopped else "finished"
        except KeyboardInterrupt:
            s.status = "interrupted"
            self.settle("interrupted", "")
        except BaseException as e:  # noqa: BLE001 - kept on the sweep; run() re-raises it, wait() too
            s.status, s.error = "failed", e
            self.settle("failed", f"{type(e).__name__}: {e}")
        finally:
            self.active = None
            self.finish()

    @strict_flags
    def train(self, point: Point, callbacks: list, progress: Optional[bool]) -> list:
        """Train one point on the base; returns the base parameters it trained in place, with their values before."""
        from ..pipeline import run

        s = self.sweep
        trained: list = []

        def adapted(model: Any, tokenizer: Any) -> None:
            s.model = model
            point.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
            trained.extend(trained_base(model))

        reset_peak_memory()
        with self.lock:
            self.active, point.status = point, "running"
        s.save()
        run(point.recipe, base=(s.model, s.tokenizer), callbacks=[_point_started(self), *callbacks],
            progress=progress, on_model=adapted)
        point.status = point.run.status if point.run is not None else "failed"
        return trained

    def started(self, run: Run) -> None:
        """The active point's run has started training (its Run exists now): a stop asked meanwhile reaches it."""
        with self.lock:
            self.active.run = run
            if self.sweep.stop_requested:
                run.stop()

    @strict_flags
    def evaluate(self, point: Point, data: Any, metric: Any, callbacks: list, progress: Optional[bool]) -> float:
        """Score a finished point on the held-out ``data`` (the score goes into its run folder too)."""
        from ...inference.evaluation import evaluate

        if progress is None:
            progress = not any(getattr(c, "shows_progress", False) for c in callbacks)
        s = self.sweep
        return evaluate(s.model, s.tokenizer, data, metric=metric, run=point.run,
                        columns=point.recipe.data.columns, progress=progress).score  # the train rows' names

    def settle(self, status: str, message: str) -> None:
        """The point that was training when the sweep ended early takes ``status``."""
        if self.active is not None and self.active.status == "running":
            self.active.status, self.active.message = status, message

    def finish(self) -> None:
        """Record the sweep's end (sweep.json, the overlaid chart), say how it went, call on_done."""
        from ...core.charts import save_png

        s = self.sweep
        s.save()
        if any(p.run is not None and p.run.history for p in s.points):
            save_png(s.figure(), s.dir / "loss.png")
        done = sum(p.status == "finished" for p in s.points)
        best = s.best
        line = f"sweep {s.status}: {done}/{len(s.points)} points finished in {s.dir}"
        if best is not None:
            name, value = criterion([best.metrics()])
            line += f"; best {best.label} ({name} {fmt(value)})"
        print(line, flush=True)
        s.done()


def _point_started(runner: PointRunner):
    """A RunCallback that hands each point's Run to the runner as training starts, so that
    :meth:`Sweep.stop` reaches it (built here: transformers is imported when a sweep trains)."""
    from ...training.callbacks import RunCallback

    class PointStarted(RunCallback):
        def on_train_begin(self, args, state, control, **kw):
            runner.started(self.run)

    return PointStarted()
