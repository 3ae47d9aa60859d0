"""A sweep shown: its title line, its results table as text and as HTML, its points' loss curves overlaid."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ...core.render import html_table, text_table
from .plan import Point


def title(folder: Path, status: str, points: Sequence[Point]) -> str:
    """The line above a sweep's table: its folder, status and how many points finished.

    Example:
        >>> title(Path("runs/sweep-1"), "running", [])
        'sweep runs/sweep-1 (running, 0/0 points finished)'
    """
    done = sum(p.status == "finished" for p in points)
    return f"sweep {folder} ({status}, {done}/{len(points)} points finished)"


def as_text(rows: list[dict], heading: str) -> str:
    """The results table (:func:`~lora_nb.experiments.sweeps.ranking.results`) as text under ``heading``.

    Example:
        >>> as_text([], "sweep runs/s (pending, 0/2 points finished)")
        'sweep runs/s (pending, 0/2 points finished)'
    """
    return text_table(list(rows[0]), [list(r.values()) for r in rows], title=heading) if rows else heading


def as_html(rows: list[dict], heading: str, points: Sequence[Point], chart_title: str) -> str:
    """The results table as HTML, followed by the overlaid loss chart once any point has a history."""
    from ...core.charts import png_img

    table = html_table(list(rows[0]), [list(r.values()) for r in rows], title=heading) if rows else ""
    if not any(p.run is not None and p.run.history for p in points):
        return table
    return table + png_img(figure(points, chart_title))


def figure(points: Sequence[Point], chart_title: str):
    """Every point's loss curves overlaid, as a matplotlib Figure."""
    from ...core.charts import loss_figure

    return loss_figure([(p.label, p.run.history) for p in points if p.run is not None], title=chart_title)
