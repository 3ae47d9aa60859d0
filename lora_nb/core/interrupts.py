"""Ctrl-C that reaches the caller, also through a library that swallows it.

datasets fingerprints every ``Dataset.map`` under a bare ``except:``
(``datasets.fingerprint.update_fingerprint``): a KeyboardInterrupt landing there — about 10 ms
for lora_nb's conversion, longer for TRL's tokenising map, which hashes the tokenizer — is lost,
and preparation runs on to its end. Inside :func:`interruptible` the first Ctrl-C is raised
again every 50 ms until it has left the block.
"""

from __future__ import annotations

import _thread
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

REPEAT_S = 0.05  # how soon a swallowed interrupt is raised again


@contextmanager
def interruptible() -> Iterator[None]:
    """Run the block so that Ctrl-C (SIGINT) ends it within :data:`REPEAT_S` of the library code
    that swallowed it. Only the main thread takes signals: elsewhere the block runs as it is.

    Example:
        >>> with interruptible():
        ...     rows = prepare("big.jsonl", tok)   # doctest: +SKIP
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    done, repeater = threading.Event(), []

    def repeat() -> None:
        while not done.wait(REPEAT_S):
            _thread.interrupt_main()

    def handler(signum: int, frame: Any) -> None:
        if done.is_set():  # a repeat that crossed the end of the block: the interrupt is already on its way
            return
        if not repeater:
            repeater.append(threading.Thread(target=repeat, name="lora_nb-interrupt", daemon=True))
            repeater[0].start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        done.set()
        if repeater:
            repeater[0].join()  # its last repeat reaches the handler above, which lets it pass
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
