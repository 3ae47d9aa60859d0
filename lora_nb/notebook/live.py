"""The live training view: a dashboard image and a status line, updated in place.

Both go through IPython display handles (``update_display``), which every front end honours —
JupyterLab, VS Code, Colab and nbconvert — so the view works where widgets do not. The image is
drawn at the first logged step, then at each logged step as soon as a 2% budget allows (a redraw
costing 0.08 s waits 4 s); the status line comes with each image, and in between at most once a
second. Every redraw is timed (``LiveChart.overhead``; ``LiveChart.lags``: how far the image was
behind the status line). The figure is drawn with matplotlib's object API on an Agg canvas: safe
from a training thread. Stop / Save-now buttons are ipywidgets, shown only for background runs,
when the kernel is idle and can handle their clicks.
"""

from __future__ import annotations

import html
import time
from typing import Any, Optional

from ..core.errors import strict_flags
from ..training.callbacks import RunCallback
from ..core.charts import Dashboard


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return (f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600
            else f"{seconds // 60}:{seconds % 60:02d}")


def status_line(run: Any) -> str:
    """One line for a run: step, losses, speed, memory, elapsed and ETA.

    Example:
        >>> from lora_nb.runs.record import Run
        >>> run = Run("runs/example")
        >>> run.step, run.max_steps, run.history = 5, 10, [{"step": 5, "loss": 1.0, "elapsed": 10.0}]
        >>> status_line(run)
        'running · step 5/10 · loss 1.0000 · elapsed 0:10 · ETA 0:10'
    """
    parts = [run.stopped_early or run.status, f"step {run.step}/{run.max_steps or '?'}"]
    for key, label, spec in (("loss", "loss", ".4f"), ("eval_loss", "eval loss", ".4f"),
                             ("tokens_per_s", "tokens/s", ",.0f"), ("memory_mb", "MiB", ",.0f")):
        value = run.last(key)
        if value is not None:
            parts.append(f"{label} {value:{spec}}")
    elapsed = run.last("elapsed")
    if elapsed:
        parts.append(f"elapsed {_clock(elapsed)}")
        if run.step and run.max_steps and run.status == "running":
            parts.append(f"ETA {_clock(elapsed / run.step * (run.max_steps - run.step))}")
    return " · ".join(parts)


class DisplayView:
    """Where a LiveChart draws in a notebook cell: two display handles (status line, PNG)."""

    def __init__(self) -> None:
        from IPython.display import HTML, display

        self.status = display(HTML(""), display_id=True)
        self.image = display(png_bundle(b""), raw=True, display_id=True)

    def show(self, png: bytes, status: str) -> None:
        from IPython.display import HTML

        if png:
            self.image.update(png_bundle(png), raw=True)
        self.status.update(HTML(status))


class BudgetedChart(RunCallback):
    """What the live views share: a chart image drawn at the first logged step, then at each logged
    step as soon as ``budget`` allows; a status line with each image, and at logged steps in
    between once ``every`` seconds have passed.

    The budget holds twice: all drawing while training stays within ``budget`` of the training
    time so far, and each image waits until the last one's drawing time fits it (a redraw that
    took 0.08 s waits 4 s: no burst of redraws after a quiet spell such as an evaluation). The
    first image is drawn regardless, as it shows the run has started; the second waits until both
    fit the budget. The figure is built before training (:meth:`prepare`, ``setup_seconds``), so
    no image carries matplotlib's start-up cost into the wait. Every redraw while training is
    timed (``frames``, :attr:`overhead`). Subclasses build the figure (``_build``), draw it
    (``_png``: None when there is nothing new) and say how to show it (``redraw``)."""

    shows_progress = True  # train()'s progress bar gives way to this view (progress=None)

    @strict_flags
    def __init__(self, every: float = 1.0, controls: bool = False, view: Any = None, budget: float = 0.02) -> None:
        self.every = every
        self.budget = budget
        self.controls = controls
        self.view = view
        self.render_seconds = 0.0
        self.setup_seconds = 0.0
        self.frames: list[tuple[float, float]] = []  # (seconds since the start, drawing seconds) per image
        self.last_png = b""
        self._training_seconds = 0.0
        self._cost = 0.0  # what the last image cost to draw and show
        self._last_image: Optional[float] = None
        self._last = 0.0
        self._started = 0.0
        self._buttons: Optional[Any] = None

    def prepare(self) -> None:
        """Build the figure (importing matplotlib) before training starts, timed in ``setup_seconds``.

        Example:
            >>> chart = LiveChart()
            >>> chart.prepare()
            >>> chart.setup_seconds > 0
            True
        """
        start = time.perf_counter()
        self._build()
        self.setup_seconds += time.perf_counter() - start

    def _build(self) -> None:
        """Build the figure, the first time only."""
        raise NotImplementedError

    def _image_due(self) -> bool:
        """Whether the image may be drawn now: the first one at once; then once another like the
        last keeps all drawing within the budget, and the last one's cost fits it since it began."""
        if self._last_image is None:
            return True
        now = time.perf_counter()
        return (now - self._last_image >= self._cost / self.budget
                and self.render_seconds + self._cost <= self.budget * (now - self._started))

    def on_log(self, args, state, control, logs=None, **kw):
        image = self._image_due()
        if image or time.perf_counter() - self._last >= self.every:
            self.redraw(image=image)

    def _png(self) -> Optional[bytes]:
        """The chart as PNG bytes, or None while there is nothing to draw."""
        raise NotImplementedError

    def _timed(self, image: bool, count: bool, show) -> None:
        """Draw (``image``), call ``show(png)`` (empty bytes: keep the image shown), and time it all."""
        start = time.perf_counter()
        png = self._png() if image else None
        show(png or b"")
        self._last = time.perf_counter()
        if png is not None:
            self.last_png = png
            self._last_image, self._cost = start, self._last - start
            if count:
                self.frames.append((start - self._started, self._last - start))
        if count:
            self.render_seconds += self._last - start

    @property
    def redraws(self) -> int:
        """Images drawn while training."""
        return len(self.frames)

    @property
    def overhead(self) -> float:
        """Time spent drawing while training, as a fraction of the training time."""
        total = self._training_seconds or (time.perf_counter() - self._started if self._started else 0.0)
        return self.render_seconds / total if total else 0.0


class LiveChart(BudgetedChart):
    """Shows a run as it trains; give it to ``lora_nb.train(callbacks=[...])``.

    ``every``: seconds after which a logged step updates the status line without a new image;
    ``budget``: the share of the training time the image may take (see :class:`BudgetedChart`).
    ``controls``: show Stop / Save-now buttons (only useful when training runs in the background).
    ``view``: where to draw (default: display handles under the current cell; the panel passes its
    widgets). After the run the last image
    stays in the notebook as a PNG and a copy goes to the run folder (``dashboard.png``).

    Example:
        >>> chart = LiveChart()                                               # doctest: +SKIP
        >>> run = lora_nb.train(model, tok, data, steps=100, callbacks=[chart])  # doctest: +SKIP
        >>> chart.overhead                                                    # doctest: +SKIP
        0.004
    """

    @strict_flags
    def __init__(self, every: float = 1.0, controls: bool = False, view: Any = None, budget: float = 0.02) -> None:
        super().__init__(every, controls, view, budget)
        self._board: Optional[Dashboard] = None
        self._rows = 0  # history rows in the image shown
        # per status update while training: how far the image was behind it, in steps and in seconds (0, 0.0: level)
        self.lags: list[tuple[int, float]] = []

    def show(self) -> None:
        """Put the buttons and the view under the current cell. Call it from the cell's own thread
        before a background run starts: output displayed from the training thread could land
        under whichever cell runs then."""
        from IPython.display import display

        if self.controls and self._buttons is None:
            self._buttons = _buttons(self)
            if self._buttons is not None:
                display(self._buttons)
        if self.view is None:
            self.view = DisplayView()

    def on_ready(self) -> None:
        self.show()  # in the cell's own thread, under the run's notes, and only once nothing can fail a setting
        self.prepare()

    def on_train_begin(self, args, state, control, **kw):
        self._started = time.perf_counter()
        self.run.on_done(lambda run: self.finish())
        self.show()
        self.redraw()

    def finish(self) -> None:
        """Final redraw once the run's status is settled (training is over: not counted in
        :attr:`overhead`); a PNG copy in the run folder."""
        self._training_seconds = time.perf_counter() - self._started
        self.redraw(count=False)
        if self._buttons is not None:
            for child in self._buttons.children:
                child.disabled = True
        if self.last_png:
            (self.run.dir / "dashboard.png").write_bytes(self.last_png)

    @strict_flags
    def redraw(self, image: bool = True, count: bool = True) -> None:
        """Update the view in place: the status line, and the dashboard image unless ``image=False``."""
        if self.run is None or self.view is None:
            return
        self._timed(image, count, lambda png: self.view.show(png, self._status_html()))
        shown = self._board.step if self._board is not None else None
        if count and shown is not None:  # before the first logged step there is nothing to draw
            steps = max(self.run.step - shown, 0)
            self.lags.append((steps, self._last - self._last_image if steps else 0.0))

    def _build(self) -> None:
        if self._board is None:
            self._board = Dashboard(self.run.name if self.run is not None else "")

    def _png(self) -> Optional[bytes]:
        if len(self.run.history) == self._rows:  # nothing logged since the image shown (or at all)
            return None
        self._build()
        self._rows = len(self.run.history)
        self._board.update(self.run.history)
        return self._board.png()

    def _status_html(self) -> str:
        hint = ""
        if self.run.status == "running":
            hint = (" — Stop / Save now work while it trains" if self.run.background else
                    " — to stop, interrupt the kernel (■ / I,I): the adapter and history are kept")
        done = ""  # a cell that trains in the foreground prints the run's one result line itself, below the chart
        if self.run.background and self.run.status in ("failed", "diverged"):
            done = f"<br><b>{html.escape(f'{self.run.status} at step {self.run.step}: {self.run.message}')}</b>"
        elif self.run.background and self.run.status != "running":
            how = {"interrupted": "stopped at step {} (interrupted)", "failed": "failed at step {}"}.get(
                self.run.status, self.run.status + " at step {}").format(self.run.step)
            how = self.run.stopped_early or how  # train.early_stopping: at which step, and why
            done = f"<br><b>{html.escape(how)}, adapter saved in {html.escape(str(self.run.adapter_dir))}</b>"
        return f"<code>{html.escape(status_line(self.run))}</code>{html.escape(hint)}{done}"


def png_bundle(png: bytes, text: str = "(training dashboard)") -> dict:
    """A display bundle for a chart: the PNG, and ``text`` where images do not render."""
    import base64

    return {"image/png": base64.b64encode(png).decode(), "text/plain": text} if png else {"text/plain": text}


def _buttons(chart: LiveChart):
    """Stop and Save-now buttons wired to the chart's run (looked up at click time), or None without ipywidgets."""
    try:
        import ipywidgets as w
    except ImportError:
        return None
    stop = w.Button(description="Stop", button_style="danger", icon="stop",
                    tooltip="stop after this step; the adapter is saved")
    save = w.Button(description="Save now", icon="save", tooltip="save the adapter after this step and keep training")
    stop.on_click(lambda _: chart.run.stop())
    save.on_click(lambda _: chart.run.save_now())
    return w.HBox([stop, save])
