"""Paths and run folders: ``~`` and ``$VARS`` in paths, and the last complete checkpoint to resume.

Shared with exported scripts (:mod:`lora_nb.export.script`): standard library and the HF stack only.
"""

from __future__ import annotations

import os


def expand_user(location: str | os.PathLike[str]) -> str:
    """A model, dataset or adapter as a user typed it, as text: ``~`` and ``$VARS`` expanded.

    Anything else (a Hub name such as ``org/model``, a relative folder) is returned unchanged.

    Example:
        >>> import os
        >>> os.environ["LORA_NB_DOCTEST"] = "/data"
        >>> expand_user("$LORA_NB_DOCTEST/train.jsonl"), expand_user("Qwen/Qwen2.5-0.5B")
        ('/data/train.jsonl', 'Qwen/Qwen2.5-0.5B')
        >>> expand_user("~/m") == os.path.join(os.path.expanduser("~"), "m")
        True
    """
    text = os.fspath(location)
    return os.path.expandvars(os.path.expanduser(text)) if text.startswith("~") or "$" in text else text


def last_checkpoint(run_dir: str | os.PathLike[str]) -> str | None:
    """The newest complete checkpoint folder under ``run_dir/checkpoints``, or None.

    Trainer writes a checkpoint's trainer_state.json last, so a checkpoint counts only once that
    file parses: one torn by a kill in the middle of saving is passed over for the one before.
    (transformers' ``get_last_checkpoint``, 5.15 to 5.25, takes the newest folder, torn or not.)

    Example:
        >>> last_checkpoint("/nonexistent-lora_nb-run") is None
        True
    """
    import json
    import re

    folder = os.path.join(str(run_dir), "checkpoints")
    found = [re.fullmatch(r"checkpoint-(\d+)", name) for name in (os.listdir(folder) if os.path.isdir(folder) else ())]
    for step in sorted((int(match[1]) for match in found if match), reverse=True):
        path = os.path.join(folder, f"checkpoint-{step}")
        try:
            with open(os.path.join(path, "trainer_state.json")) as f:
                json.load(f)
            return path
        except (OSError, ValueError):
            continue
    return None
