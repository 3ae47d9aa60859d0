"""lora_nb's own progress display: one bar for work that takes a while (a run, an evaluation, a
large load), and none for what takes a second.

Its bars write to the stream under :mod:`lora_nb.core.quiet`'s capture, so they show while the
libraries' output is kept out; a notebook kernel draws them as widgets (tqdm.auto); where stderr
is neither a terminal nor a notebook's (a log file, CI) they are off: there a bar is a wall of
redraws.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import strict_flags
from .quiet import stream_under_capture


@strict_flags
def progress_bar(*, disable: bool = False, **kwargs: Any) -> Any:
    """lora_nb's own progress display (a run's bar, an evaluation's): tqdm.auto — a widget in a
    notebook kernel — on the stderr under the capture, so it shows while the libraries' output is
    captured; off where stderr is neither a terminal nor a notebook's (a log file, CI), where a bar
    would be a wall of redraws. ``kwargs`` go to tqdm.

    Example:
        >>> with progress_bar(total=3, desc="rows") as bar:
        ...     _ = bar.update(3)
    """
    from tqdm.auto import tqdm

    stream = stream_under_capture()
    shown = _in_kernel() or bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(file=stream, disable=disable or not shown, **kwargs)


@contextmanager
def ticking(desc: str) -> Iterator[None]:
    """A line that shows the time passing (``desc: 0:12``) while a library works without a display
    of its own — TRL tokenising a large dataset — under the same rules as :func:`progress_bar`.

    Example:
        >>> with ticking("tokenising 100,000 rows (TRL)"):
        ...     pass
    """
    bar = progress_bar(total=None, desc=desc, bar_format="{desc}: {elapsed}", leave=False)
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.5):
            bar.refresh()

    ticker = threading.Thread(target=tick, name="lora_nb-ticking", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        bar.close()


def _in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (tqdm.auto's own test: a notebook front end draws its bars)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


# a local folder under 1 GiB loads in about a second (SmolLM2-135M, 513 MiB: 0.3 s): a bar there is noise
SMALL_BYTES = 2 ** 30


def worth_a_bar(source: Any) -> bool:
    """Whether loading ``source`` deserves a progress bar: not for a local folder or a loaded model
    holding under :data:`SMALL_BYTES` of weights; yes for anything else (a Hub name may download).

    Example:
        >>> import torch
        >>> worth_a_bar(torch.nn.Linear(4, 4)), worth_a_bar("Qwen/Qwen2.5-0.5B-Instruct")
        (False, True)
    """
    if hasattr(source, "parameters"):
        return sum(p.numel() * p.element_size() for p in source.parameters()) >= SMALL_BYTES
    folder = (Path(os.path.expandvars(os.path.expanduser(os.fspath(source))))
              if isinstance(source, (str, os.PathLike)) else None)
    if folder is None or not folder.is_dir() or (folder / "adapter_config.json").is_file():
        return True  # a Hub name, or an adapter whose base is loaded from elsewhere
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".bin")) >= SMALL_BYTES
