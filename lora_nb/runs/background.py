"""Work in a background thread, as a Run and a Sweep both do it: start, stop, wait, on_done.

A :class:`lora_nb.runs.record.Run` trained with ``background=True`` and a
:class:`lora_nb.experiments.sweeps.sweep.Sweep` run with ``background=True`` share this one
piece: the thread, the stop request, the error kept for :meth:`Background.wait`, and the
callbacks called once the work has ended.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional, TypeVar

Self = TypeVar("Self", bound="Background")


class Background:
    """The background-thread half of a run or a sweep (a subclass has a ``dir``: the thread is named after it).

    ``error``: what the work raised, kept here so :meth:`wait` (or the call that ran it in the
    foreground) re-raises it.

    Example:
        >>> job = Background()
        >>> job.dir = Path("runs/example")
        >>> job.start(lambda: None); job.wait().running
        False
    """

    dir: Path

    def __init__(self) -> None:
        self.error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._on_done: list[Callable] = []
        self._ended = False  # done() has run: an on_done registered later is called at once
        self._done_lock = threading.Lock()

    def start(self, target: Callable[[], None]) -> None:
        """Run ``target`` (the training) in a daemon thread named after the folder.

        Example:
            >>> run.start(lambda: trainer.train())   # doctest: +SKIP
        """
        self._ended = False
        self._thread = threading.Thread(target=target, name=f"lora_nb {Path(self.dir).name}", daemon=True)
        self._thread.start()

    @property
    def background(self) -> bool:
        """True for work started in a background thread (``background=True``)."""
        return self._thread is not None

    @property
    def running(self) -> bool:
        """True while the background thread is still training."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Ask the training to stop after the current step; what it made so far is saved.

        Safe to call from another thread (a notebook's Stop button).

        Example:
            >>> run = lora_nb.Run.load("runs/20261128-101500")
            >>> run.stop(); run.stop_requested
            True
        """
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`stop` has been called."""
        return self._stop.is_set()

    def wait(self: Self, timeout: Optional[float] = None) -> Self:
        """Block until the background work ends (or ``timeout`` seconds pass); re-raise its error if it failed.

        Example:
            >>> peft_model = lora_nb.inject(lora_nb.load("my-model")[0], r=4, targets="attention", verbose=False)
            >>> run = lora_nb.train(peft_model, tok, "train.jsonl", steps=500, background=True)
            >>> run.stop(); run.wait().status  # doctest: +ELLIPSIS
            stopped at step ..., adapter saved in runs/...-r4-attention-lr2e-4/adapter...
            'stopped'
        """
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None and not self.running:
            raise self.error
        return self

    def on_done(self, fn: Callable) -> None:
        """Call ``fn(self)`` once the work has ended and everything it made is saved (at once, in this
        thread, when it has already ended: a run that ends before its caller registers still reports).

        Example:
            >>> run = lora_nb.Run.load("runs/20261128-101500")
            >>> run.on_done(lambda r: print(r.status))
        """
        with self._done_lock:
            if not self._ended:
                self._on_done.append(fn)
                return
        fn(self)

    def done(self) -> None:
        """Call the :meth:`on_done` callbacks: the work has ended and everything is saved."""
        with self._done_lock:
            self._ended = True
            callbacks = list(self._on_done)
        for fn in callbacks:
            fn(self)
