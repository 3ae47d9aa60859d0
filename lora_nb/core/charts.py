"""Loss charts drawn with matplotlib's object API on the Agg canvas.

No pyplot: a ``Figure`` with an Agg canvas is safe to draw from any thread and never opens a
window, so the same code serves scripts, background training threads and notebooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing).

    Example:
        >>> [round(v, 3) for v in smooth([1.0, 0.0], 0.5)]
        [1.0, 0.333]
    """
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def loss_figure(runs: Iterable[tuple[str, list[dict]]], title: str = ""):
    """A Figure of training loss (raw and smoothed) and eval loss against step, one colour per run.

    ``runs`` is ``[(label, history), ...]`` where history rows hold ``step`` and ``loss`` and/or
    ``eval_loss``.

    Example:
        >>> fig = loss_figure([("run", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])])
        >>> fig.axes[0].get_xlabel()
        'step'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (label, history) in enumerate(runs):
        color = f"C{i}"
        train = [(h["step"], h["loss"]) for h in history if h.get("loss") is not None]
        if train:
            steps, losses = zip(*train)
            ax.plot(steps, losses, color=color, alpha=0.25, linewidth=1)
            ax.plot(steps, smooth(list(losses)), color=color, linewidth=2, label=f"{label} loss")
        evals = [(h["step"], h["eval_loss"]) for h in history if h.get("eval_loss") is not None]
        if evals:
            steps, losses = zip(*evals)
            ax.plot(steps, losses, color=color, linestyle="--", marker="o", markersize=3, label=f"{label} eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_png(fig, path: Optional[str | Path] = None) -> bytes:
    """PNG bytes of ``fig``, also written to ``path`` when given.

    Example:
        >>> save_png(loss_figure([]))[:4]
        b'\\x89PNG'
    """
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def png_img(fig, style: str = "") -> str:
    """An HTML ``<img>`` holding ``fig`` as an inline PNG (a data URI), for notebooks' HTML outputs;
    ``style``: its CSS (``width:560px``).

    Example:
        >>> png_img(loss_figure([]))[:32]
        "<img src='data:image/png;base64,"
    """
    import base64

    data = base64.b64encode(save_png(fig)).decode()
    return f"<img src='data:image/png;base64,{data}'" + (f" style='{style}'" if style else "") + "/>"


class Dashboard:
    """The live run's four panels — loss (raw, smoothed, eval), learning rate, grad norm, and
    tokens/s with memory — built once and then only fed new data.

    Rebuilding a figure per redraw costs most of a second; updating the lines of one costs a tenth
    of that, which is what keeps a live chart under 2% of a run's time.

    Example:
        >>> board = Dashboard("run")
        >>> board.update([{"step": 1, "loss": 2.0, "learning_rate": 1e-4, "grad_norm": 1.0}])
        >>> board.png()[:4]
        b'\x89PNG'
    """

    SERIES = (("loss", 0, "C0"), ("smoothed", 0, "C0"), ("eval_loss", 0, "C3"), ("learning_rate", 1, "C2"),
              ("grad_norm", 2, "C1"), ("tokens_per_s", 3, "C4"), ("memory_mb", 4, "grey"))

    def __init__(self, title: str = "") -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(10, 5.2), dpi=72)
        self.canvas = FigureCanvasAgg(self.fig)
        grid = self.fig.subplots(2, 2)
        axes = [grid[0][0], grid[0][1], grid[1][0], grid[1][1]]
        axes.append(axes[3].twinx())
        titles = ("loss (light: raw, dark: smoothed, red: eval)", "learning rate", "grad norm",
                  "tokens/s (purple), memory MiB (grey)")
        for ax, name in zip(axes, titles):
            ax.set_title(name, fontsize=10)
            ax.grid(alpha=0.3)
        for ax in axes:
            ax.tick_params(labelsize=7)
            ax.locator_params(nbins=4)  # tick labels are most of the drawing time
            ax.locator_params(axis="x", integer=True)  # steps: never 0.95 … 1.05
        for ax in axes[2:4]:
            ax.set_xlabel("step", fontsize=8)
        self.axes = axes
        style = {"loss": dict(alpha=0.3, linewidth=1), "smoothed": dict(linewidth=2),
                 "eval_loss": dict(linestyle="--", marker="o", markersize=3), "memory_mb": dict(linestyle=":")}
        self.lines = {key: axes[i].plot([], [], color=color, **style.get(key, {}))[0] for key, i, color in self.SERIES}
        self.markers = {key: line.get_marker() for key, line in self.lines.items()}
        self.step: Optional[int] = None  # the last step fed in
        if title:
            self.fig.suptitle(title, fontsize=11)
        self.fig.subplots_adjust(left=0.07, right=0.93, top=0.88, bottom=0.08, hspace=0.35, wspace=0.25)

    def update(self, history: list[dict]) -> None:
        """Feed the whole history so far (cheap: only line data changes)."""
        def series(key):
            rows = [(h["step"], h[key]) for h in history if h.get(key) is not None]
            return [r[0] for r in rows], [r[1] for r in rows]

        data = {key: series(key) for key, _, _ in self.SERIES if key != "smoothed"}
        data["smoothed"] = (data["loss"][0], smooth(data["loss"][1]))
        for key, (xs, ys) in data.items():
            _set_points(self.lines[key], xs, ys, self.markers[key])
        steps = [h["step"] for h in history]
        self.step = max(steps) if steps else None
        for ax in self.axes:
            _around_one_step(ax, steps)

    def png(self) -> bytes:
        """The dashboard as PNG bytes; the last step it shows is in the image too (:func:`png_step`)."""
        import io

        buf = io.BytesIO()
        # zlib level 3: half the encoding time of the default 6, and no larger for line charts
        self.canvas.print_png(buf, metadata={STEP_KEY: str(self.step)} if self.step is not None else None,
                              pil_kwargs={"compress_level": 3})
        return buf.getvalue()


STEP_KEY = "lora_nb step"  # the PNG text chunk holding the last step a dashboard shows


def png_step(png: bytes) -> Optional[int]:
    """The last training step a :class:`Dashboard` PNG shows (None for another PNG): what a test,
    or anyone holding only the image, can check it against.

    Example:
        >>> board = Dashboard()
        >>> board.update([{"step": 7, "loss": 2.0}])
        >>> png_step(board.png())
        7
    """
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        step = image.info.get(STEP_KEY)
    return int(step) if step is not None else None


def _set_points(line, xs: list, ys: list, marker: str = "None") -> None:
    """A line's data and its ``marker``; a line of one point gets a dot, or it would not show at all."""
    line.set_data(xs, ys)
    line.set_marker("o" if len(xs) == 1 else marker)


def _around_one_step(ax, steps: list[int]) -> None:
    """Autoscale ``ax`` to its data; while there is only one step, an x axis around it, not a sliver."""
    ax.relim()
    ax.autoscale_view()
    if steps and min(steps) == max(steps):
        ax.set_xlim(steps[0] - 1, steps[0] + 1, auto=True)  # auto: the next update rescales


class Overlay:
    """Several runs' losses in one chart — a sweep's points as they train — built once and then only
    fed new data, like :class:`Dashboard`: each new label adds its lines (raw loss faint, smoothed
    solid, eval loss dashed) in a colour of its own.

    Example:
        >>> chart = Overlay("sweep")
        >>> chart.update([("r4", [{"step": 1, "loss": 2.0}]), ("r8", [{"step": 1, "loss": 1.8}])])
        >>> sorted(chart.lines), chart.png()[:4]
        (['r4', 'r8'], b'\\x89PNG')
    """

    def __init__(self, title: str = "") -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(8, 4), dpi=72)
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_subplot()
        self.ax.set_xlabel("step", fontsize=9)
        self.ax.set_ylabel("loss (light: raw, dashed: eval)", fontsize=9)
        self.ax.tick_params(labelsize=8)
        self.ax.locator_params(nbins=5)  # tick labels are most of the drawing time
        self.ax.locator_params(axis="x", integer=True)
        self.ax.grid(alpha=0.3)
        if title:
            self.ax.set_title(title, fontsize=10)
        self.lines: dict[str, tuple] = {}  # label -> (raw, smoothed, eval) lines
        self.fig.subplots_adjust(left=0.08, right=0.97, top=0.9, bottom=0.12)

    def update(self, series: Iterable[tuple[str, list[dict]]]) -> None:
        """Feed every series so far, ``[(label, history), ...]`` (cheap: only line data changes)."""
        added, every_step = False, []
        for label, history in series:
            if label not in self.lines:
                color = f"C{len(self.lines) % 10}"
                self.lines[label] = (self.ax.plot([], [], color=color, alpha=0.25, linewidth=1)[0],
                                     self.ax.plot([], [], color=color, linewidth=2, label=label)[0],
                                     self.ax.plot([], [], color=color, linestyle="--", marker="o", markersize=3)[0])
                added = True
            raw, smoothed, evals = self.lines[label]
            train = [(h["step"], h["loss"]) for h in history if h.get("loss") is not None]
            steps, losses = (list(v) for v in zip(*train)) if train else ([], [])
            every_step += [h["step"] for h in history]
            raw.set_data(steps, losses)
            _set_points(smoothed, steps, smooth(losses))
            evaluated = [(h["step"], h["eval_loss"]) for h in history if h.get("eval_loss") is not None]
            evals.set_data([s for s, _ in evaluated], [v for _, v in evaluated])
        if added:
            self.ax.legend(fontsize=7, loc="upper right", ncol=1 + len(self.lines) // 8)
        _around_one_step(self.ax, every_step)

    def png(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.canvas.print_png(buf, pil_kwargs={"compress_level": 3})  # as Dashboard.png
        return buf.getvalue()
