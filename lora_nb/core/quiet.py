"""Library noise kept out of the notebook, and kept: whatever an installed library warns, logs or
writes to stderr during a lora_nb call (and while the call imports it, or, once lora_nb is
imported, while anyone first imports the training stack) goes to a log file and is counted, not
shown — known messages or not, any library, any log level: a new release's new message stays out.

A library is told apart by where the code sits: an installed package (site-packages, or the
folder of transformers, peft, trl… wherever imported from), or a logger named after one. A
training run logs into its folder (``runs/<name>/log.txt``, named in its result line: ``finished
150 steps, … (7 library messages in runs/…/log.txt)``); other calls into ``log.txt`` in lora_nb's
cache folder. lora_nb's own warnings, errors, and what a user's code prints or warns still show,
and so does anything another thread writes while a call runs (a capture belongs to the thread
that opened it; a training thread joins its run's capture with :meth:`Capture.joined`).

Example:
    >>> with captured() as log:
    ...     logging.getLogger("transformers.trainer").warning("a library's note")
    >>> log.count, log.path.name
    (1, 'log.txt')
"""

from __future__ import annotations

import functools
import importlib.abc
import logging
import os
import sys
import sysconfig
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from .errors import LoraNbWarning, strict_flags
from .files import cache_dir

LIBRARIES = ("transformers", "datasets", "bitsandbytes", "peft", "trl", "accelerate", "torch", "huggingface_hub")

_local = threading.local()
_lock = threading.RLock()
_users = 0  # open captures, all threads: the hooks are installed while any is open
_saved: dict = {}


class Capture:
    """The library messages of one operation: counted, and written to ``path`` once it is set.

    Example:
        >>> cap = Capture()
        >>> cap.add("UserWarning: x")
        >>> cap.count, cap.summary()
        (1, '1 library message hidden: lora_nb.core.quiet.last().lines')
    """

    def __init__(self, path: Optional[Path] = None) -> None:
        self.lines: list[str] = []
        self.path: Optional[Path] = None
        self._written = 0
        self._guard = threading.Lock()
        if path is not None:
            self.to(path)

    @property
    def count(self) -> int:
        return len(self.lines)

    def add(self, text: str) -> None:
        with self._guard:
            self.lines.append(f"{time.strftime('%H:%M:%S')} {text.rstrip()}")
            self._flush()

    def to(self, path: Optional[Path]) -> None:
        """Write what was captured so far to ``path`` (appending), then what follows; None: keep it in memory."""
        with self._guard:
            if path is None or self.path != Path(path):
                self.path, self._written = (None if path is None else Path(path)), 0
            self._flush()

    def _flush(self) -> None:
        if self.path is None or self._written == len(self.lines):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in self.lines[self._written:]))
            self._written = len(self.lines)
        except OSError:  # a log that cannot be written must not stop the operation
            pass

    def summary(self) -> str:
        """``"3 library messages in runs/x/log.txt"``; empty when nothing was captured."""
        if not self.lines:
            return ""
        where = f"in {self.path}" if self.path is not None else "hidden: lora_nb.core.quiet.last().lines"
        return f"{self.count} library message{'s' if self.count != 1 else ''} {where}"

    @contextmanager
    def joined(self) -> Iterator["Capture"]:
        """Capture into this object from another thread too (a background training thread)."""
        with captured(self) as capture:
            yield capture


def default_log() -> Path:
    """Where calls without a run folder log: ``log.txt`` in lora_nb's cache folder."""
    return cache_dir() / "log.txt"


_last: Optional[Capture] = None


def last() -> Optional[Capture]:
    """The capture of the most recent lora_nb call that ended, to read what it hid.

    Example:
        >>> with captured():
        ...     pass
        >>> last().lines
        []
    """
    return _last


def current() -> Optional[Capture]:
    """The capture open in this thread, if any."""
    return (getattr(_local, "stack", None) or [None])[-1]


@strict_flags
@contextmanager
def captured(capture: Optional[Capture] = None, *, progress: bool = False) -> Iterator[Capture]:
    """Capture library messages in this thread until the block ends; returns the :class:`Capture`
    (logging to ``capture``'s path, else :func:`default_log`).

    Nested calls join the outer capture (one count per user-level call). ``progress=False`` also
    hides transformers' and the Hub's progress bars (datasets' are always hidden: they are data
    preparation, a few seconds at most); a load or a merge keeps them as its one progress display.

    Example:
        >>> with captured() as log:
        ...     logging.getLogger("transformers.trainer").warning("noise")
        >>> log.lines[-1].endswith("transformers.trainer WARNING: noise")
        True
    """
    global _last
    outer = current()
    with _open(capture, progress) as capture:
        bars = _hide_bars(progress)  # imports datasets and transformers: what they say doing so is captured
        try:
            yield capture
        finally:
            bars()
            if outer is None:  # also when the call failed: last() tells what it hid
                _last = capture


@contextmanager
def _open(capture: Optional[Capture], progress: bool) -> Iterator[Capture]:
    """The hooks of :func:`captured`, without touching the libraries' bars (which imports them)."""
    global _users
    stack = _local.__dict__.setdefault("stack", [])
    capture = capture or (stack[-1] if stack else None) or Capture(default_log())
    stack.append(capture)
    kept = _local.__dict__.setdefault("bars", [False])
    kept.append(progress)
    with _lock:
        if _users == 0:
            _install()
        _users += 1
    try:
        yield capture
    finally:
        stack.pop()
        kept.pop()
        with _lock:
            _users -= 1
            if _users == 0:
                _uninstall()


def stream_under_capture() -> Any:
    """The stderr a capture stands in for (``sys.stderr`` when none is open): where lora_nb's own
    progress display writes."""
    return _saved.get("stderr", sys.stderr)


class _QuietImports(importlib.abc.MetaPathFinder):
    """Captures what the training stack's packages say while they are first imported, whoever
    imports them once lora_nb is (bitsandbytes' CPU kernel hints, a Hub-offline note, a deprecation
    printed at import): their top-level module runs under a capture, logging to :func:`default_log`."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in LIBRARIES:
            return None
        for finder in sys.meta_path:
            found = None if finder is self or not hasattr(finder, "find_spec") else finder.find_spec(name, path, target)
            if found is not None:
                if hasattr(found.loader, "exec_module"):
                    found.loader = _QuietLoader(found.loader)
                return found
        return None


class _QuietLoader(importlib.abc.Loader):
    """A package's own loader, run under a capture; everything else is the wrapped loader's."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = self._loader  # the package sees its own loader (resources, source)
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with _open(None, False):
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def quietly(progress: Union[bool, Callable[[Any], bool]] = False):
    """Decorate an API function so the library noise of its call is captured (into the caller's
    open capture, else a new one logging to :func:`default_log`). ``progress``: keep the libraries'
    progress bars, or a function of the call's first argument saying whether to (:func:`worth_a_bar`).

    Example:
        >>> @quietly()
        ... def step():
        ...     logging.getLogger("peft").warning("noise")
        >>> step(); last().count
        1
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            shown = progress(args[0] if args else None) if callable(progress) else progress
            with captured(progress=shown):
                return fn(*args, **kwargs)
        return wrapper
    return decorate


def _hide_bars(progress: bool):
    """Turn the libraries' progress bars off; returns the function that turns them back. (Both
    libraries are imported here if they are not yet: every lora_nb call that captures uses them.)"""
    import datasets.utils as dutils
    from transformers.utils import logging as tlog

    undo = []
    if os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS") is None and not dutils.are_progress_bars_disabled():
        dutils.disable_progress_bars()
        undo.append(dutils.enable_progress_bars)
    if not progress and tlog.is_progress_bar_enabled():
        tlog.disable_progress_bar()
        undo.append(tlog.enable_progress_bar)

    def restore() -> None:
        for fn in undo:
            fn()
    return restore


_PACKAGE = Path(__file__).resolve().parent
_STDLIB = tuple(Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib"))


def _library_file(filename: str) -> bool:
    """Whether ``filename`` is an installed package's file (site-packages, dist-packages, or the
    folder of a library imported from elsewhere), not a user's code, the standard library or lora_nb."""
    if not filename or filename.startswith("<"):
        return False
    path = Path(filename).resolve()
    if _PACKAGE in path.parents:
        return False
    return ("site-packages" in path.parts or "dist-packages" in path.parts
            or any(root in path.parents for root in _library_roots()))


def _from_library(category: type, filename: str) -> bool:
    """A library's warning: raised in an installed package (or pointing at lora_nb's own call site
    of one), and not a :class:`lora_nb.core.errors.LoraNbWarning`. A user's code warns as before."""
    if issubclass(category, LoraNbWarning):
        return False
    return _library_file(filename) or (bool(filename) and _PACKAGE in Path(filename).resolve().parents)


def _library_roots() -> list[Path]:
    """The folders of the libraries already imported, wherever they are installed (a --target
    folder on PYTHONPATH has no site-packages in its path)."""
    files = (getattr(sys.modules.get(name), "__file__", None) for name in LIBRARIES)
    return [Path(f).resolve().parent for f in files if f]


def _library_logger(record: logging.LogRecord) -> bool:
    """A record logged by a library: under a library's logger name (``transformers.trainer``,
    ``kernels``: the top-level module is a library's), or logged from a library's file."""
    top = record.name.split(".")[0]
    if top == "lora_nb":
        return False
    module = sys.modules.get(top)
    return top in LIBRARIES or _library_file(getattr(module, "__file__", None) or "") or _library_file(record.pathname)


def _showwarning(message, category, filename, lineno, file=None, line=None):
    capture = current()
    if capture is not None and _from_library(category, filename):
        capture.add(f"{category.__name__}: {message} ({filename}:{lineno})")
    elif capture is not None and issubclass(category, LoraNbWarning):  # lora_nb's own: a line, not a red box
        print(f"note: {message}", flush=True)
    else:
        _saved["showwarning"](message, category, filename, lineno, file, line)


def _call_handlers(logger: logging.Logger, record: logging.LogRecord) -> None:
    """``Logger.callHandlers`` while captures are open: a library's record logged in a capturing
    thread goes to its capture, whatever the logger and its level; any other goes where it would."""
    capture = current()
    if capture is not None and _library_logger(record):
        capture.add(f"{record.name} {record.levelname}: {record.getMessage()}")
        return
    _saved["callHandlers"](logger, record)


class _Stderr:
    """Stands in for ``sys.stderr`` while captures are open: what a library writes in a capturing
    thread (a print, a traceback, a progress bar the call does not keep) goes to the capture, line
    by line; the user's code, lora_nb and other threads write through."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._pending = threading.local()

    def write(self, text: str) -> int:
        capture = current()
        if capture is None or not _writer_is_library(sys._getframe(1)):
            return self._stream.write(text)
        pending = getattr(self._pending, "text", "") + text
        *lines, self._pending.text = pending.split("\n")
        for line in lines:
            line = line.rsplit("\r", 1)[-1].strip()  # a bar redrawn in place: its last state
            if line:
                capture.add(line)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _writer_is_library(frame: Any) -> bool:
    """Whether the code writing to stderr is a library's: the first frame outside the standard
    library and tqdm decides, so ``traceback.print_exc()`` counts as its caller and a tqdm bar as
    whoever drives it. A library's bar writes through when the call keeps its bars."""
    through_tqdm = False
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name == "tqdm" or name.startswith("tqdm."):
            through_tqdm = True
        elif not _stdlib_file(frame.f_code.co_filename):
            bars_kept = getattr(_local, "bars", [False])[-1]
            return _library_file(frame.f_code.co_filename) and not (through_tqdm and bars_kept)
        frame = frame.f_back
    return False


@functools.lru_cache(maxsize=4096)
def _stdlib_file(filename: str) -> bool:
    path = Path(filename).resolve()
    return (not ("site-packages" in path.parts or "dist-packages" in path.parts)
            and any(root in path.parents for root in _STDLIB))


def _install() -> None:
    _saved["showwarning"] = warnings.showwarning
    warnings.showwarning = _showwarning
    _saved["callHandlers"] = logging.Logger.callHandlers
    logging.Logger.callHandlers = _call_handlers
    _saved["stderr"] = sys.stderr
    sys.stderr = _Stderr(sys.stderr)


def _uninstall() -> None:
    if warnings.showwarning is _showwarning:
        warnings.showwarning = _saved["showwarning"]
    logging.Logger.callHandlers = _saved.pop("callHandlers")
    stderr = _saved.pop("stderr")
    if isinstance(sys.stderr, _Stderr):  # unless something replaced it since (IPython's capture_output)
        sys.stderr = stderr


# From lora_nb's import on, the training stack's own imports are captured too (see _QuietImports).
if not any(isinstance(finder, _QuietImports) for finder in sys.meta_path):
    sys.meta_path.insert(0, _QuietImports())
