"""Run folders: which folder a run writes to, what counts as free, and what a finished run keeps.

Nothing the user made is overwritten: a folder holding files is refused unless ``overwrite``; the
one exception is a folder a :func:`lora_nb.train` call left when it was killed before training
(it carries that call's mark, its process is gone, and it holds only what train() writes first).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Optional, Union

from ..core.errors import ConfigError, strict_flags
from ..core.files import check_free, user_path
from ..hf.folders import last_checkpoint
from .processes import process_alive
from .record import PREPARING


@strict_flags
def new_run_dir(output_dir: Optional[str], *, overwrite: bool = False, resume: Optional[str] = None,
                label: str = "") -> Path:
    """The folder a run writes to, checked before anything is written.

    ``resume``: that run's folder (it must hold a complete checkpoint). ``output_dir``: used
    when empty or new; a folder that already holds files is refused unless ``overwrite``.
    Neither: a fresh ``runs/<YYYYmmdd-HHMMSS>-<label>`` folder (``label``: the run's settings,
    :func:`lora_nb.runs.labels.run_label`), numbered when two runs start in the same second.

    Example:
        >>> new_run_dir(None, label="r16-attention-lr2e-4").parent.name
        'runs'
    """
    if resume:
        folder = user_path(resume)
        if last_checkpoint(folder) is None:
            raise ConfigError("train.resume", str(folder), problem="holds no complete checkpoint to resume from "
                              "(a run folder has checkpoints/checkpoint-N once its first save is done)")
        return folder
    if output_dir:
        return check_free(output_dir, "output_dir", option="overwrite=True (or resume= to continue that run)",
                          overwrite=overwrite or never_trained(user_path(output_dir)))
    return timestamped_folder(label=label)


def timestamped_folder(prefix: str = "", label: str = "") -> Path:
    """A new folder name in ``runs/``: ``<prefix><YYYYmmdd-HHMMSS>-<label>`` (``prefix`` "sweep-"
    for a sweep's folder), numbered ``-2``, ``-3``, … when that one exists already. Nothing is created.

    Example:
        >>> timestamped_folder("sweep-").name.startswith("sweep-20")
        True
    """
    base = Path("runs") / "-".join(filter(None, [prefix + datetime.now().strftime("%Y%m%d-%H%M%S"), label]))
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def remove_new(folder: Path, before: Optional[set]) -> None:
    """Remove ``folder`` if it did not exist (``before`` is None), else what was added since ``before``."""
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in set(folder.iterdir()) - before if folder.is_dir() else ():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# What train() writes into a run folder before the first step.
BEFORE_TRAINING = {PREPARING, "log.txt", "metrics.jsonl", "train.jsonl", "eval.jsonl", "recipe.yaml", "checkpoints"}


def never_trained(folder: Union[str, Path]) -> bool:
    """Whether ``folder`` was left by a :func:`train` call that ended (a kill, a crash) before its
    first step: it still carries the mark that call made, its process is gone, and it holds only
    what train() writes before training. A new run may take it, as if it were empty.

    Example:
        >>> never_trained("runs/20261128-101500")
        False
    """
    folder = Path(folder)
    try:
        mark = json.loads((folder / PREPARING).read_text())
    except (OSError, ValueError):
        return False
    names = {p.name for p in folder.iterdir()}
    return (names <= BEFORE_TRAINING and not process_alive(mark) and not any((folder / "checkpoints").glob("*"))
            and (not (folder / "metrics.jsonl").exists() or (folder / "metrics.jsonl").stat().st_size == 0))


def prune_checkpoints(run_dir: Union[str, Path]) -> None:
    """Once a run has ended, keep only what resuming it needs: its last complete checkpoint (the
    others go), whose adapter file becomes a hard link to the run's adapter when the two are the
    same bytes. A finished run then holds the adapter once plus its optimizer state, not the
    adapter five times (two checkpoints, each with its optimizer state, and the adapter).
    Under early stopping the best eval's checkpoint stays too: a resumed run loads it at its end.

    Example:
        >>> prune_checkpoints("runs/20261128-101500")
    """
    import filecmp

    folder = Path(run_dir)
    last = last_checkpoint(folder)
    if last is None:
        return
    best = json.loads((Path(last) / "trainer_state.json").read_text()).get("best_model_checkpoint")
    for old in (folder / "checkpoints").glob("checkpoint-*"):
        if old.is_dir() and old != Path(last) and old.name != Path(best or "").name:
            shutil.rmtree(old, ignore_errors=True)
    ours, theirs = folder / "adapter" / "adapter_model.safetensors", Path(last) / "adapter_model.safetensors"
    if ours.is_file() and theirs.is_file() and not ours.samefile(theirs) and filecmp.cmp(ours, theirs, shallow=False):
        link = theirs.with_name(theirs.name + ".link")
        try:
            os.link(ours, link)
            os.replace(link, theirs)
        except OSError:  # a file system without hard links keeps both copies
            link.unlink(missing_ok=True)
