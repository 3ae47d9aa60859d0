"""A sweep's plan: every point of the grid (seeds outermost), each with its settings, seed,
folder name and checked recipe, built before anything trains."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ...core.errors import ConfigError
from ...recipe.schema import Recipe
from ...runs.record import Run
from .grid import setting_key, value_labels


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
                "tokens/s": self.run.mean("tokens_per_s") if self.run is not None else None,
                "trainable params": self.trainable_params, "peak MiB": max(memory) if memory else None}

    def record(self) -> dict:
        """The point as plain data, for ``sweep.json``."""
        return {"label": self.label, "settings": self.settings, "seed": self.seed, "status": self.status,
                "message": self.message, **self.metrics()}


def plan_points(recipe: Recipe, grid: dict, seeds: int, folder: Path) -> list[Point]:
    """Every point's recipe, built with Recipe.from_dict so a bad value is refused naming its setting.

    ``grid``: setting -> the values to try (:func:`~lora_nb.experiments.sweeps.grid.grid_values`);
    each point's run folder is ``folder/<label>``.

    Example:
        >>> recipe = Recipe.from_dict({"model": {"name": "m"}, "data": {"path": "d.jsonl"}})
        >>> [p.label for p in plan_points(recipe, {"r": [4, 8], "steps": [50]}, 2, Path("runs/s"))]
        ['r4-s0', 'r8-s0', 'r4-s1', 'r8-s1']
    """
    keys = {key: setting_key(key) for key in grid}
    for i, (key, dotted) in enumerate(keys.items()):
        earlier = [k for k in list(keys)[:i] if keys[k] == dotted]
        if earlier:
            raise ConfigError(key, problem=f"names the same setting ({dotted}) as {earlier[0]!r}")
    varying = [key for key, values in grid.items() if len(values) > 1]
    parts = {key: value_labels(keys[key], grid[key]) for key in varying}
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
