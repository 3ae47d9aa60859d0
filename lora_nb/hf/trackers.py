"""The experiment trackers a run can report to (transformers' ``report_to``), where their logs go, and which are
installed. Plain standard library: lora_nb and its exported scripts share it.

A run reports to its trackers with the run folder's name as the run name (wandb, mlflow, trackio) and, for
trackio, the folder above it as the project (``lora_nb`` for the default ``runs/``); tensorboard writes its
event files into the run folder's ``tensorboard/``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# tracker -> the packages transformers' callback can use (tensorboard: torch.utils.tensorboard needs the
# tensorboard package; transformers' TensorBoardCallback falls back to tensorboardX)
TRACKER_PACKAGES = {"trackio": ("trackio",), "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",),
                    "mlflow": ("mlflow",)}


def trackers(report_to: Any) -> list[str]:
    """The trackers a ``report_to`` value names: None, ``"none"``, a name, ``"a,b"`` or a list.

    Example:
        >>> trackers(None), trackers("none"), trackers("trackio, tensorboard"), trackers(["wandb"])
        ([], [], ['trackio', 'tensorboard'], ['wandb'])
    """
    names = report_to.split(",") if isinstance(report_to, str) else list(report_to or [])
    return [n for n in dict.fromkeys(str(n).strip() for n in names) if n and n != "none"]


def installed_trackers() -> list[str]:
    """The trackers whose package is installed here (found, not imported).

    Example:
        >>> set(installed_trackers()) <= set(TRACKER_PACKAGES)
        True
    """
    return [name for name, packages in TRACKER_PACKAGES.items()
            if any(importlib.util.find_spec(p) is not None for p in packages)]


def tracker_keywords(report_to: Any, run_dir: str) -> dict[str, Any]:
    """``SFTConfig`` keywords that name the run in its trackers: ``run_name`` (the run folder's name) and
    ``project`` (trackio's: the folder above, ``lora_nb`` for ``runs``); none without a tracker.

    Example:
        >>> tracker_keywords("trackio", "runs/20261201-r16")
        {'run_name': '20261201-r16', 'project': 'lora_nb'}
        >>> tracker_keywords(None, "runs/x")
        {}
    """
    if not trackers(report_to):
        return {}
    path = os.path.abspath(run_dir)
    parent = os.path.basename(os.path.dirname(path))
    return {"run_name": os.path.basename(path), "project": "lora_nb" if parent in ("runs", "") else parent}


def tensorboard_dir(run_dir: str) -> str:
    """Where a run's tensorboard event files go.

    Example:
        >>> tensorboard_dir("runs/x").replace(os.sep, "/")
        'runs/x/tensorboard'
    """
    return os.path.join(run_dir, "tensorboard")


@contextmanager
def tracker_dirs(report_to: Any, run_dir: str) -> Iterator[None]:
    """While the trainer is built, point transformers' TensorBoardCallback at :func:`tensorboard_dir` (it reads
    ``TENSORBOARD_LOGGING_DIR`` when made: transformers 5 dropped ``logging_dir``), unless the user set it.

    Example:
        >>> with tracker_dirs("tensorboard", "runs/x"):
        ...     os.environ["TENSORBOARD_LOGGING_DIR"].replace(os.sep, "/")
        'runs/x/tensorboard'
    """
    if "tensorboard" not in trackers(report_to) or "TENSORBOARD_LOGGING_DIR" in os.environ:
        yield
        return
    os.environ["TENSORBOARD_LOGGING_DIR"] = tensorboard_dir(run_dir)
    try:
        yield
    finally:
        os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
