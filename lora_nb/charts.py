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
