"""Which models are training right now, and the one refusal for touching one that is.

A second run, a generate, an evaluate, an inject or a sweep on weights that are training would
fight over train/eval mode and accelerate's state: each calls :func:`check_not_training` first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..core.errors import ConfigError
from .provenance import unwrap

if TYPE_CHECKING:
    from .record import Run

# Models training right now in this process: id of the base model -> its Run.
_BUSY: dict[int, "Run"] = {}


def training_run(model: Any) -> Optional["Run"]:
    """The Run training ``model`` right now (in this process), or None.

    Example:
        >>> training_run(object()) is None
        True
    """
    return _BUSY.get(id(unwrap(model)))


def training(model: Any, run: Optional["Run"]) -> None:
    """Mark ``model`` as trained by ``run`` (None: free again).

    Example:
        >>> model = object(); training(model, None); training_run(model) is None
        True
    """
    if run is None:
        _BUSY.pop(id(unwrap(model)), None)
    else:
        _BUSY[id(unwrap(model))] = run


def check_not_training(model: Any, before: str = "", *, key: str = "model") -> None:
    """Refuse ``model`` while a run trains it: a ConfigError naming the run and how to stop or wait
    for it ``before`` doing what was asked (e.g. "generating"; empty: "first"). ``key``: the
    argument the model came in as.

    Example:
        >>> check_not_training(object(), "generating")   # a model nothing trains: no error
    """
    busy = training_run(model)
    if busy is not None:
        raise ConfigError(key, problem=_busy_problem(busy, before))


def check_run_not_training(run_or_folder: Any, before: str = "", *, key: str = "run") -> None:
    """Refuse a run — a :class:`~lora_nb.Run`, its folder or its adapter folder — that is training
    right now in this process, as :func:`check_not_training` refuses its model.

    Example:
        >>> check_run_not_training("runs/20261128-101500", "pushing")   # nothing trains it: no error
    """
    from pathlib import Path

    folder = Path(getattr(run_or_folder, "dir", run_or_folder)).expanduser().resolve()
    for busy in list(_BUSY.values()):
        if Path(busy.dir).resolve() in (folder, folder.parent):
            raise ConfigError(key, problem=_busy_problem(busy, before))


def _busy_problem(busy: "Run", before: str) -> str:
    return (f"is training in run {busy.name}: stop it (run.stop(), %lora stop) or wait for it (run.wait(), "
            f"%lora wait) {f'before {before}' if before else 'first'}")
