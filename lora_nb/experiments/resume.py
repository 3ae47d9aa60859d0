"""Resuming after a runtime reset: the newest run a kill, Ctrl-C or Stop left unfinished, found in
``runs/`` or in a mirror of it (``train(..., mirror=...)``), continued as its recipe says.

A run found only in a mirror (the local folder went with the runtime) is first copied back to
``runs/NAME``, whole or not at all, and continues there. Where to look for mirrors: the ``mirror``
argument, else ``$LORA_NB_MIRROR``, plus the mirrors the local runs' ``run.json`` record.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from ..core.errors import ConfigError, strict_flags
from ..core.files import replace_folder, user_path
from ..hf.folders import last_checkpoint
from ..runs.find import find_runs
from ..runs.record import Run

RESUMABLE = ("killed", "interrupted", "stopped")
MIRROR_ENV = "LORA_NB_MIRROR"
PathLike = Union[str, Path]


def resumable(run: Optional[PathLike] = None, *, mirror: Optional[PathLike] = None,
              runs: PathLike = "runs") -> tuple[Optional[Run], Optional[Path], list[Path]]:
    """The run to resume, the mirror it was found in (None: found locally) and every folder looked in.

    ``run``: a run folder, or a run's name under ``runs`` or a mirror; None: the newest killed,
    interrupted or stopped run holding a complete checkpoint, locally or (when its local folder is gone)
    in a mirror.

    Example:
        >>> resumable(runs="/nonexistent-lora_nb-runs")[0] is None
        True
    """
    root = user_path(runs)
    mirrors = _mirrors(root, mirror)
    looked = [root, *mirrors]
    if run is not None:
        return (*_named(run, root, mirrors), looked)
    found = [(r, None) for r in find_runs(root) if can_resume(r)]
    for place in mirrors:
        found += [(r, place) for r in find_runs(place)
                  if can_resume(r) and not (root / r.dir.relative_to(place)).exists()]
    if not found:
        return None, None, looked
    chosen, place = max(found, key=lambda pair: (pair[0].started, pair[1] is None))
    return chosen, place, looked


@strict_flags
def resume(run: Optional[PathLike] = None, *, mirror: Optional[PathLike] = None, runs: PathLike = "runs",
           callbacks: Sequence[Any] = (), background: bool = False, progress: Optional[bool] = None,
           on_model: Optional[Callable[[Any, Any], None]] = None,
           say: Optional[Callable[[str], None]] = print) -> Optional[Run]:
    """Continue the newest unfinished run (or ``run``) from its last complete checkpoint, with the same losses.

    Finds it with :func:`resumable` (under ``runs`` and the mirrors), copies it back from the mirror
    when its local folder is gone, reloads its base as its recipe records (model, quant, dtype), puts
    the recorded adapter on and trains on with the recorded data and settings (:func:`lora_nb.run` with
    ``train.resume``), mirroring again where the run mirrored. ``say`` gets one line first: which run,
    how far it got, from where; or, with nothing to resume, where it looked (and None is returned).
    ``callbacks``, ``background``, ``progress``, ``on_model``: as for :func:`lora_nb.run`.

    Example:
        >>> run = lora_nb.resume()  # doctest: +SKIP
        resuming runs/20261128-101500-r4-all-linear-lr2e-4 (killed at step 40 of 100, from its checkpoint of step 36)
        >>> lora_nb.resume(runs="/nonexistent-lora_nb-runs", mirror="/nonexistent-lora_nb-mirror")
        nothing to resume: no killed, interrupted or stopped run with a checkpoint in /nonexistent-lora_nb-runs, \
/nonexistent-lora_nb-mirror
    """
    from .pipeline import run as run_recipe

    say = say or (lambda line: None)
    found, place, looked = resumable(run, mirror=mirror, runs=runs)
    if found is None:
        say("nothing to resume: no killed, interrupted or stopped run with a checkpoint in "
            + ", ".join(map(str, looked)))
        return None
    folder = found.dir
    if place is not None:
        folder = user_path(runs) / found.dir.relative_to(place)
        replace_folder(folder, lambda tmp: shutil.copytree(found.dir, tmp))
    if found.recipe is None:
        raise ConfigError("train.resume", str(folder), problem="holds no recipe.yaml: resume it with "
                          "lora_nb.train(model, tok, data, resume=...) on the model it trained")
    step = json.loads((Path(last_checkpoint(folder)) / "trainer_state.json").read_text())["global_step"]
    say(f"resuming {folder} ({found.status} at step {found.step} of {found.max_steps}, from its checkpoint of step "
        f"{step}" + (f"; from the mirror {place}" if place is not None else "") + ")")
    recipe = found.recipe
    recipe.train.resume, recipe.output_dir = str(folder), str(folder)
    recipe.data.path = _moved(recipe.data.path, folder)
    recipe.data.eval = _moved(recipe.data.eval, folder)
    mirrored = _recorded_mirror(folder) or (str(place) if place is not None else None)
    if mirrored and not recipe.train.mirror:  # keep mirroring where the run mirrored to
        recipe.train.mirror = mirrored
    return run_recipe(recipe, callbacks=callbacks, background=background, progress=progress, on_model=on_model)


def can_resume(run: Run) -> bool:
    """Whether ``run`` was left unfinished (killed, interrupted, stopped) with a complete checkpoint to go on from.

    Example:
        >>> can_resume(Run("/nonexistent-lora_nb-run"))
        False
    """
    return run.status in RESUMABLE and last_checkpoint(run.dir) is not None


def _mirrors(root: Path, mirror: Optional[PathLike]) -> list[Path]:
    """The mirror folders to look in: ``mirror`` (else ``$LORA_NB_MIRROR``) and those local runs recorded."""
    given = mirror or os.environ.get(MIRROR_ENV)
    places = [user_path(given)] if given else []
    for run in find_runs(root):
        recorded = _recorded_mirror(run.dir)
        if recorded:
            places.append(user_path(recorded))
    unique = {p.resolve(): p.absolute() for p in places if p.resolve() != root.resolve()}  # said as absolute paths
    return list(unique.values())


def _recorded_mirror(folder: Path) -> Optional[str]:
    """The mirror a run's run.json records (``"mirror"``), or None."""
    try:
        return json.loads((folder / "run.json").read_text()).get("mirror") or None
    except (OSError, ValueError, AttributeError):
        return None


def _named(run: PathLike, root: Path, mirrors: list[Path]) -> tuple[Optional[Run], Optional[Path]]:
    """The run called ``run``: a folder, else a name under ``root``, else under a mirror."""
    for place, folder in [(None, user_path(run)), (None, root / run), *[(m, m / run) for m in mirrors]]:
        if folder.is_dir() and (folder / "run.json").exists():
            if place is not None and (root / folder.relative_to(place)).exists():
                continue
            return Run.load(folder), place
    raise ConfigError("run", str(run), problem="is no run folder, nor a run's name in "
                      + ", ".join(map(str, [root, *mirrors])))


def _moved(path: Any, folder: Path) -> Any:
    """A data path the recipe records in the run's own folder (rows given as a list), where the run now is."""
    if not isinstance(path, str) or Path(path).exists() or not (folder / Path(path).name).exists():
        return path
    return str(folder / Path(path).name)
