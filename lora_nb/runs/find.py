"""Finding runs: every run folder under a root, read back, filtered with ``key=value`` terms, newest first.

The filter language: terms separated by spaces, all of which a run must match — ``key=value``
against its status, name, label or a recipe setting (``r=16``, ``lora.targets=attention``,
``status=finished``; numbers compare as numbers), or text found in its name or label.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..core.errors import ConfigError, check_positive
from ..core.files import user_path
from ..recipe.schema import SECTIONS
from .record import PREPARING, Run, started_time

RUN_KEYS = ("status", "name", "label")


def _filter_keys() -> dict[str, str]:
    """What ``key=value`` in a runs filter can name: the run's status, name and label, and every
    recipe setting, dotted (``lora.r``) or bare where the bare name is unique (``r``, ``lr``)."""
    dotted = {f"{section}.{f.name}": f"{section}.{f.name}" for section, cls in SECTIONS.items()
              for f in dataclasses.fields(cls)}
    bare: dict[str, list[str]] = {}
    for key in dotted:
        bare.setdefault(key.split(".", 1)[1], []).append(key)
    keys = {k: k for k in RUN_KEYS}
    keys.update({name: found[0] for name, found in bare.items() if len(found) == 1 and name not in keys})
    return {**keys, **dotted, "output_dir": "output_dir"}


def find_runs(root: Union[str, Path] = "runs", *, filter: Optional[str] = None, limit: Optional[int] = None,
              runs: Sequence[Run] = ()) -> list[Run]:
    """Every run in ``root``'s folders, newest first: runs of this kernel, of other kernels, of the CLI.

    A run folder holds ``run.json`` or ``metrics.jsonl``: ``root`` itself, a folder in it, or one
    a level further down (a sweep's runs). Each is read with :meth:`Run.load`, so a run whose
    process died shows as ``killed`` and a torn file is skipped (a folder that cannot be read at
    all shows as ``unreadable``). ``runs``: runs held in memory (a notebook session's), listed
    instead of their folder's copy, wherever they are. ``filter``: terms separated by spaces, all
    of which a run must match: ``key=value`` against its status, name, label or a recipe setting
    (``r=16``, ``lora.targets=attention``, ``status=finished``; numbers compare as numbers), or
    text found in its name or label. ``limit``: at most this many, the newest.

    Example:
        >>> [run.name for run in find_runs("runs", filter="r=4 status=finished", limit=5)]
        ['20261128-101500']
    """
    if limit is not None:
        check_positive("limit", limit, of="runs")
    terms = (filter or "").split()
    keys = _filter_keys()
    for term in terms:
        key = term.split("=", 1)[0]
        if "=" in term and key not in keys:
            raise ConfigError("filter", key, problem="is not a run setting", allowed=keys)
    found = {run.dir.resolve(): run for run in runs}
    for folder in _run_folders(user_path(root)):
        found.setdefault(folder.resolve(), _load_any(folder))
    chosen = [run for run in found.values() if all(_matches(run, term, keys) for term in terms)]
    chosen.sort(key=lambda run: (run.started, run.name), reverse=True)
    return chosen[:limit]


def _run_folders(root: Path, depth: int = 2) -> list[Path]:
    """``root`` if it is a run folder, else the run folders in it, down to ``depth`` folders deep
    (a sweep's runs sit in its folder inside runs/). A folder still marked as being prepared has
    not trained (yet, or ever: a call killed before its first step) and is no run."""
    if (root / "run.json").exists() or (root / "metrics.jsonl").exists():
        return [] if (root / PREPARING).exists() and not (root / "run.json").exists() else [root]
    if depth == 0 or not root.is_dir():
        return []
    return [run for child in sorted(root.iterdir()) if child.is_dir() and not child.name.startswith(".")
            for run in _run_folders(child, depth - 1)]


def _load_any(folder: Path) -> Run:
    """:meth:`Run.load`, or a Run saying why its folder cannot be read (a recipe from another version)."""
    try:
        return Run.load(folder)
    except (ConfigError, OSError) as e:
        run = Run(folder)
        run.status, run.message, run.started = "unreadable", str(e), started_time(folder)
        return run


def _matches(run: Run, term: str, keys: dict[str, str]) -> bool:
    if "=" not in term:
        return term.lower() in f"{run.name} {run.label}".lower()
    key, want = term.split("=", 1)
    path = keys[key]
    if path in RUN_KEYS:
        value: Any = getattr(run, path)
    elif run.recipe is None:
        return False
    else:
        value = run.recipe
        for part in path.split("."):
            value = getattr(value, part)
    if isinstance(value, list):  # targets=q_proj matches [q_proj, v_proj]; so does targets=q_proj,v_proj
        return want in map(str, value) or want == ",".join(map(str, value))
    return _same(value, want)


def _same(value: Any, want: str) -> bool:
    """``value`` (a setting) equals ``want`` (what was typed): numbers as numbers, the rest as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(want) == float(value)
        except ValueError:
            return False
    if value is None:
        return want.lower() in ("null", "none", "")
    return str(value).lower() == want.lower()
