"""kill -9 a training process once it has saved a checkpoint: what a crashed kernel or a reset runtime leaves."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Union


def kill_once_saved(script: str, status: Union[Path, Callable[[], Optional[Path]]], step: int = 8,
                    cwd: Optional[Path] = None) -> None:
    """Run ``script`` in a new Python and SIGKILL it (no handler, no final save) once the run.json at ``status``
    (a path, or a function finding it) says a checkpoint of ``step`` or later is saved."""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        found = status() if callable(status) else status
        info = json.loads(found.read_text()) if found is not None and found.exists() else {}
        if info.get("saved_step", 0) >= step:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
