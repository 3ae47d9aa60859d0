"""``sweep.json``: a sweep's grid, recipe, status and each point's result, rewritten atomically
after every point so a killed sweep still says what finished, and read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ...core.errors import ConfigError
from ...core.files import atomic_write
from ...recipe.schema import Recipe
from ...runs.record import Run
from .plan import Point


def write_record(folder: Path, status: str, seeds: int, grid: dict, recipe: Recipe,
                 points: Sequence[Point]) -> None:
    """Write ``folder/sweep.json`` atomically: a kill mid-write keeps the previous one.

    Example:
        >>> write_record(s.dir, s.status, s.seeds, s.grid, s.recipe, s.points)   # doctest: +SKIP
    """
    record = {"status": status, "seeds": seeds, "grid": grid, "recipe": recipe.to_dict(),
              "points": [p.record() for p in points]}
    atomic_write(folder / "sweep.json", json.dumps(record, indent=1))


def read_record(folder: Path) -> dict:
    """What ``folder/sweep.json`` holds; a ConfigError when the folder holds none.

    Example:
        >>> read_record(Path("runs/sweep-20261128-101500"))["status"]   # doctest: +SKIP
        'finished'
    """
    if not (folder / "sweep.json").is_file():
        raise ConfigError("sweep", str(folder), problem="holds no sweep.json")
    return json.loads((folder / "sweep.json").read_text())


def restore_points(points: Sequence[Point], info: dict, folder: Path) -> str:
    """Give the planned ``points`` what ``info`` (:func:`read_record`) and their run folders say
    (status, score, their Run read back); returns the sweep's status: ``killed`` when a point's
    process died while it trained (see :meth:`lora_nb.runs.record.Run.load`).

    Example:
        >>> sweep.status = restore_points(sweep.points, read_record(sweep.dir), sweep.dir)   # doctest: +SKIP
    """
    records = {r["label"]: r for r in info["points"]}
    for point in points:
        record = records.get(point.label, {})
        point.status, point.message = record.get("status", "pending"), record.get("message", "")
        point.score, point.trainable_params = record.get("eval score"), record.get("trainable params")
        if (folder / point.label / "run.json").exists():
            point.run = Run.load(folder / point.label)
            if point.status == "running":
                point.status = point.run.status
    return "killed" if any(p.status == "killed" for p in points) else info["status"]
