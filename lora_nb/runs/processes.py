"""Which process wrote a run folder, and whether it still runs: how a killed run is told from a running one."""

from __future__ import annotations

import os
from typing import Optional


def process_alive(info: dict) -> bool:
    """Whether the process that wrote ``info`` (run.json's ``pid``, ``pid_started``, ``host``) still
    runs; True where this machine cannot tell.

    A pid alone is not enough: once that process has ended the OS may give its number to another
    one, so the process's start time must match the one recorded too.

    Example:
        >>> process_alive(this_process()), process_alive({"pid": os.getpid(), "host": "another-machine"})
        (True, True)
    """
    import socket

    pid = info.get("pid")
    if not pid or info.get("host") != socket.gethostname():
        return True
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # alive, but not ours to inspect
        return True
    recorded = info.get("pid_started")
    return recorded is None or abs(started - recorded) < 1.0


def process_started(pid: int) -> Optional[float]:
    """When process ``pid`` started (seconds since the epoch), or None where that cannot be read.

    Example:
        >>> process_started(os.getpid()) > 0
        True
    """
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def this_process() -> dict:
    """What a run folder records about the process writing it: ``pid``, ``pid_started``, ``host``.

    Example:
        >>> process_alive(this_process())
        True
    """
    import socket

    return {"pid": os.getpid(), "pid_started": process_started(os.getpid()), "host": socket.gethostname()}
