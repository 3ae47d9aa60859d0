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


def dashboard_figure(history: list[dict], title: str = ""):
    """Four panels for a live run: loss (raw, smoothed, eval), learning rate, grad norm, and
    throughput (tokens/s) with memory on a second axis.

    Example:
        >>> fig = dashboard_figure([{"step": 1, "loss": 2.0, "learning_rate": 1e-4, "grad_norm": 1.0}])
        >>> len(fig.axes) >= 4
        True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5.2), dpi=90)
    FigureCanvasAgg(fig)
    (loss_ax, lr_ax), (grad_ax, speed_ax) = fig.subplots(2, 2)

    def series(key):
        rows = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        return list(zip(*rows)) if rows else ([], [])

    steps, losses = series("loss")
    if losses:
        loss_ax.plot(steps, losses, color="C0", alpha=0.3, linewidth=1, label="loss")
        loss_ax.plot(steps, smooth(list(losses)), color="C0", linewidth=2, label="smoothed")
    eval_steps, evals = series("eval_loss")
    if evals:
        loss_ax.plot(eval_steps, evals, color="C3", marker="o", markersize=3, linestyle="--", label="eval loss")
    loss_ax.set_title("loss", fontsize=10)
    if losses or evals:
        loss_ax.legend(fontsize=7)
    for ax, key, name, color in ((lr_ax, "learning_rate", "learning rate", "C2"), (grad_ax, "grad_norm", "grad norm", "C1")):
        xs, ys = series(key)
        ax.plot(xs, ys, color=color)
        ax.set_title(name, fontsize=10)
    xs, ys = series("tokens_per_s")
    speed_ax.plot(xs, ys, color="C4")
    speed_ax.set_title("tokens/s (purple), memory MiB (grey)", fontsize=10)
    mem_ax = speed_ax.twinx()
    xs, ys = series("memory_mb")
    mem_ax.plot(xs, ys, color="grey", linestyle=":")
    for ax in (loss_ax, lr_ax, grad_ax, speed_ax):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    mem_ax.tick_params(labelsize=7)
    grad_ax.set_xlabel("step", fontsize=8)
    speed_ax.set_xlabel("step", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
