"""A run's experiment trackers (``train.report_to``): checked installed before anything loads, told where to
write (:mod:`lora_nb.hf.trackers`), and kept quiet — trackio logs to its local database without starting its
dashboard server in a notebook, and what it prints goes to the run's ``log.txt`` with the other library messages.
lora_nb's own run folder, metrics and live chart stay as they are.
"""

from __future__ import annotations

import contextlib
import functools
import io
from typing import Any

from ..core.errors import ConfigError
from ..core.quiet import current
from ..hf.trackers import (TRACKER_PACKAGES, installed_trackers, tensorboard_dir, tracker_dirs,
                           tracker_keywords, trackers)


def check_installed(report_to: Any, installed: list[str] | None = None) -> None:
    """Refuse, in one line, a tracker whose package is not installed (``installed``: the trackers found here).

    Example:
        >>> check_installed("wandb", installed=["trackio"])
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: train.report_to: 'wandb' is not installed; pip install wandb.
    """
    installed = installed_trackers() if installed is None else installed
    for name in trackers(report_to):
        if name not in installed:
            raise ConfigError("train.report_to", problem=f"{name!r} is not installed; "
                              f"pip install {TRACKER_PACKAGES[name][0]}")


def where(report_to: Any, run_dir: str) -> str:
    """One line saying where each tracker of the run writes; empty without trackers.

    Example:
        >>> print(where(["trackio", "tensorboard"], "runs/x").replace("\\\\", "/"))
        reporting to trackio (project lora_nb, run x: trackio show --project lora_nb), tensorboard (runs/x/tensorboard)
    """
    said = []
    for name in trackers(report_to):
        if name == "trackio":
            names = tracker_keywords(name, run_dir)
            said.append(f"trackio (project {names['project']}, run {names['run_name']}: "
                        f"trackio show --project {names['project']})")
        elif name == "tensorboard":
            said.append(f"tensorboard ({tensorboard_dir(run_dir)})")
        else:
            said.append(name)
    return "reporting to " + ", ".join(said) if said else ""


def follow_trackers(trainer: Any, report_to: Any, run_dir: str) -> None:
    """Set ``trainer``'s tracker callbacks up for a run in ``run_dir``, and say where they write: tensorboard's
    into ``run_dir/tensorboard`` (transformers 5 has no ``logging_dir``: its callback reads
    ``TENSORBOARD_LOGGING_DIR`` when made), trackio's locally and quietly (:func:`local_trackio`).

    Example:
        >>> follow_trackers(trainer, "tensorboard", "runs/x")  # doctest: +SKIP
        reporting to tensorboard (runs/x/tensorboard)
    """
    from transformers.integrations import TensorBoardCallback, TrackioCallback

    if trainer.pop_callback(TrackioCallback) is not None:
        trainer.add_callback(local_trackio()())
    if trainer.pop_callback(TensorBoardCallback) is not None:
        with tracker_dirs(report_to, run_dir):
            trainer.add_callback(TensorBoardCallback())
    if trackers(report_to):
        print(where(report_to, run_dir))


@functools.lru_cache(maxsize=None)
def local_trackio() -> type:
    """The class of :func:`quiet_trackers`' callback, made on first use (transformers' integrations import slowly).

    Example:
        >>> local_trackio().__name__
        'LocalTrackio'
    """
    from transformers.integrations import TrackioCallback

    class LocalTrackio(TrackioCallback):
        """transformers' TrackioCallback, logging locally only: no dashboard server started in a notebook
        (``trackio.init(embed=False)``), and trackio's prints into the capture (the run's ``log.txt``)."""

        def setup(self, args: Any, state: Any, model: Any, **kwargs: Any) -> None:
            module = self._trackio
            self._trackio = _NoDashboard(module)
            try:
                with _printed_to_log():
                    super().setup(args, state, model, **kwargs)
            finally:
                self._trackio = module

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            with _printed_to_log():
                super().on_train_end(*args, **kwargs)

    return LocalTrackio


class _NoDashboard:
    """The trackio module, whose ``init`` never embeds (starts) the local dashboard."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def init(self, *args: Any, **kwargs: Any) -> Any:
        return self._module.init(*args, **{**kwargs, "embed": False})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


@contextlib.contextmanager
def _printed_to_log():
    """What a tracker prints (trackio: "* Trackio project initialized…") into the open capture, not the notebook."""
    capture = current()
    if capture is None:
        yield
        return
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        yield
    for line in out.getvalue().splitlines():
        if line.strip():
            capture.add(line)

