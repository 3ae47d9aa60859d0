"""A sweep's results: one row per setting (its seeds combined as mean ± spread), and which
finished point is best — highest eval score, else lowest eval loss, else lowest final loss."""

from __future__ import annotations

import json
import statistics
from typing import Any, NamedTuple, Optional, Sequence

from ...core.render import fmt
from .plan import Point

RANKED_BY = ("eval score", "eval loss", "final loss")  # the first any point has ranks them


class Spread(NamedTuple):
    """A metric over a point's seeds: their mean and standard deviation (None from a single seed).

    Example:
        >>> str(Spread(0.5, 0.25)), str(Spread(0.5, None))
        ('0.5 ± 0.25', '0.5')
    """

    mean: float
    spread: Optional[float]

    def __str__(self) -> str:
        return fmt(self.mean) if self.spread is None else f"{fmt(self.mean)} ± {fmt(self.spread)}"


def results(points: Sequence[Point], grid: dict, seeds: int) -> list[dict]:
    """The rows of :meth:`lora_nb.experiments.sweeps.sweep.Sweep.table`: one per setting, with the
    settings that vary, status and the points' metrics (a :class:`Spread` over the seeds when
    ``seeds > 1``); ``best`` marks the best row. Columns no row has a value for are left out.

    Example:
        >>> results([], {"r": [4, 8]}, 1)
        []
    """
    varying = [key for key, values in grid.items() if len(values) > 1]
    rows = []
    for group in groups(points):
        row: dict = {"best": ""}
        row.update({key: _shown(group[0].settings[key]) for key in varying})
        if seeds > 1:
            row["seeds"] = len(group)
        statuses = [p.status for p in group]
        row["status"] = statuses[0] if len(set(statuses)) == 1 else ", ".join(
            f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
        metrics = [p.metrics() for p in group]
        for name in metrics[0]:
            values = [m[name] for m in metrics if m[name] is not None]
            row[name] = combine(values) if seeds > 1 else (values[0] if values else None)
        rows.append(row)
    best = best_group(points)
    if best is not None:
        rows[best]["best"] = "★"
    empty = [name for name in (rows[0] if rows else {}) if name not in ("best", "status")
             and name not in varying and all(r[name] is None for r in rows)]
    return [{k: v for k, v in row.items() if k not in empty} for row in rows]


def groups(points: Sequence[Point]) -> list[list[Point]]:
    """The points by setting (their seeds together), in grid order."""
    found: dict[str, list[Point]] = {}
    for point in points:
        found.setdefault(json.dumps(point.settings, sort_keys=True), []).append(point)
    return list(found.values())


def best_group(points: Sequence[Point]) -> Optional[int]:
    """The index (in :func:`groups`) of the best setting whose seeds all finished, or None yet."""
    done = [(i, g) for i, g in enumerate(groups(points)) if all(p.status == "finished" for p in g)]
    if not done:
        return None
    means = [(i, {name: mean([p.metrics()[name] for p in g]) for name in RANKED_BY}) for i, g in done]
    name, _ = criterion([m for _, m in means])
    scored = [(i, m[name]) for i, m in means if m[name] is not None]
    if not scored:
        return None
    return (max if name == "eval score" else min)(scored, key=lambda item: item[1])[0]


def best_point(points: Sequence[Point]) -> Optional[Point]:
    """The best finished point (with seeds: the best seed of the best setting), or None yet.

    Example:
        >>> best_point([]) is None
        True
    """
    index = best_group(points)
    if index is None:
        return None
    group = groups(points)[index]
    name, _ = criterion([p.metrics() for p in group])
    ranked = [p for p in group if p.metrics()[name] is not None]
    return (max if name == "eval score" else min)(ranked, key=lambda p: p.metrics()[name])


def criterion(metrics: list[dict]) -> tuple[str, Optional[float]]:
    """Which metric ranks points — eval score when any has one, else eval loss, else final loss — and
    the first's value.

    Example:
        >>> criterion([{"eval score": None, "eval loss": 0.5}, {"eval score": None, "eval loss": 0.4}])
        ('eval loss', 0.5)
    """
    for name in RANKED_BY:
        if any(m.get(name) is not None for m in metrics):
            value = metrics[0][name]
            return name, value.mean if isinstance(value, Spread) else value
    return "final loss", None


def mean(values: list) -> Optional[float]:
    """The mean of the values that are not None (None when none is)."""
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def combine(values: list) -> Optional[Spread]:
    """The values (a metric over a point's seeds) as mean ± standard deviation; None when there are none."""
    if not values:
        return None
    return Spread(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


def _shown(value: Any) -> Any:
    return ", ".join(map(str, value)) if isinstance(value, list) else value
