"""Writing files without losing anything: atomic writes, the no-overwrite rule, one-line errors.

The rule: lora_nb never writes into a non-empty folder or over an existing file it did not create
for the current run, unless asked (``overwrite=True`` in the API, ``--force`` in the CLI,
``--overwrite`` in the magics). The error names the path and the option.

A write is whole or absent: it fills a hidden temporary sibling that is renamed into place once
complete (:func:`writing`, :func:`atomic_write`, :func:`replace_folder`). A full disk, a read-only
disk or a Ctrl-C removes the sibling and leaves what was there before as it was; :func:`write_error`
turns the file system's error into one line naming the setting, the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from .errors import ConfigError, strict_flags
from ..hf.folders import expand_user  # noqa: F401 - defined there: exported scripts expand paths the same way

PathLike = Union[str, os.PathLike]


def user_path(path: PathLike) -> Path:
    """A path as a user typed it, with ``~`` and ``$VARS`` expanded.

    Example:
        >>> user_path("~/runs").is_absolute()
        True
    """
    return Path(expand_user(path))


def is_taken(path: PathLike) -> bool:
    """True for an existing file, or a folder with anything in it.

    Example:
        >>> is_taken("/nonexistent-folder-of-lora_nb")
        False
    """
    path = Path(path)
    if path.is_dir():
        return any(not _left_by_a_dead_write(entry) for entry in path.iterdir())
    return path.exists()


def _left_by_a_dead_write(entry: Path) -> bool:
    """A ``.lora_nb.tmp<pid>`` folder whose process is gone: a write killed before it could clean up."""
    match = re.fullmatch(r"\.lora_nb\.tmp(\d+)", entry.name)
    if match is None:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, under another user
        return False
    return False


@strict_flags
def check_free(path: PathLike, key: str, *, overwrite: bool = False, option: str = "overwrite=True") -> Path:
    """``path`` if lora_nb may write there: it does not exist, is an empty folder, or ``overwrite``.

    Raises a ConfigError naming ``key``, the path and ``option`` otherwise.

    Example:
        >>> check_free("/tmp/lora_nb-doctest-new-folder", "out_dir").name
        'lora_nb-doctest-new-folder'
    """
    path = user_path(path)
    if not overwrite and is_taken(path):
        what = "folder is not empty" if path.is_dir() else "file exists"
        raise ConfigError(key, str(path), problem=f"the {what} and lora_nb never overwrites what it did not make; "
                          f"choose a new path, or pass {option} to replace it")
    return path


def atomic_write(path: PathLike, data: Union[str, bytes]) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and a rename, so a reader (or a
    crash) sees the old file or the new one, never half of one. On a failure the sibling is removed
    and the OSError raised as is; :func:`write_error` makes it one line.

    Example:
        >>> atomic_write("/tmp/lora_nb-doctest.txt", "hello").read_text()
        'hello'
    """
    path = Path(path)
    with _staged(path, whole=True) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    return path


def replace_folder(folder: Path, fill: Callable[[Path], None]) -> Path:
    """Fill a fresh temporary sibling of ``folder`` with ``fill(tmp)``, then swap it in whole.

    At every moment one complete version is on disk: ``folder`` itself, or (during the two
    renames of the swap) ``folder.old``. If ``fill`` fails (or is interrupted) the sibling is
    removed, ``folder`` is left as it was and the error raised as is.

    Example:
        >>> replace_folder(Path("/tmp/lora_nb-doctest-swap"), lambda tmp: tmp.mkdir()).is_dir()
        True
    """
    with _staged(Path(folder), whole=True) as tmp:
        fill(tmp)
    return folder


@contextlib.contextmanager
def writing(path: PathLike, key: str) -> Iterator[Path]:
    """Write the folder ``path`` whole or not at all: the block fills the temporary folder it is given.

    The temporary folder is hidden beside ``path`` (inside it when ``path`` is an existing folder,
    so that it is on the same disk); when the block ends its entries take their places, in one
    rename for a new folder, one rename per file in an existing one, whose other files are kept.
    On any error or Ctrl-C the temporary folder is removed and ``path`` is left as it was. An OSError
    (full disk, read-only disk, a parent that is a file, no permission; also a library's I/O error
    such as safetensors' "os error 28") becomes one :class:`ConfigError` line from :func:`write_error`;
    a Ctrl-C stays a KeyboardInterrupt, with a one-line message.

    Example:
        >>> with writing("/tmp/lora_nb-doctest-folder", "out_dir") as tmp:
        ...     _ = (tmp / "notes.txt").write_text("hello")
        >>> (Path("/tmp/lora_nb-doctest-folder") / "notes.txt").read_text()
        'hello'
    """
    path = user_path(path)
    try:
        with _staged(path, whole=False) as tmp:
            tmp.mkdir()
            yield tmp
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{key}: interrupted while writing {path}; nothing was left behind") from None
    except Exception as e:
        error = write_error(e, path, key)
        if error is None:
            raise
        raise error from None


_FIXES = {
    errno.ENOSPC: ("the disk is full{free}", "free some space or choose a folder on another disk, then retry"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or choose a folder on another disk, then retry"),
    errno.EROFS: ("the disk is read-only", "choose a folder on a writable disk"),
    errno.EACCES: ("permission denied", "choose a folder you can write to"),
    errno.EPERM: ("permission denied", "choose a folder you can write to"),
    errno.ENOTDIR: ("{blocker} is a file but should be a directory", "move that file away or choose another path"),
    errno.EISDIR: ("it is a folder", "choose a file name"),
    errno.ENAMETOOLONG: ("a name in it is too long", "choose a shorter path"),
}


def write_error(error: BaseException, path: PathLike, key: str, *,
                left: str = "nothing was left behind") -> Optional[ConfigError]:
    """The one-line :class:`ConfigError` for a file system ``error`` met writing ``path`` (the
    setting ``key``), or None when ``error`` is not one. ``left`` says what is on disk afterwards.

    It says what happened (disk full, with the space left; read-only; a parent that is a file;
    permission denied), the path, and the fix. Rust libraries' I/O errors (safetensors,
    tokenizers) count: their message ends in "(os error N)".

    Example:
        >>> try:
        ...     trainer.save_model(out)                                     # doctest: +SKIP
        ... except OSError as e:
        ...     raise write_error(e, out, "output_dir", left="the last checkpoint is kept") or e from None
        >>> str(write_error(OSError(30, "Read-only file system"), "/ro/x", "k"))
        'k: cannot write /ro/x: the disk is read-only; nothing was left behind. Choose a folder on a writable disk.'
    """
    number = error.errno if isinstance(error, OSError) else None
    if number is None:
        match = re.search(r"\(os error (\d+)\)", str(error))
        number = int(match.group(1)) if match else None
    if number is None:
        return None
    path = Path(path)
    blocker = _file_in_the_way(path)
    if number == errno.EEXIST and blocker is not None:  # mkdir under a file says "File exists"
        number = errno.ENOTDIR
    what, fix = _FIXES.get(number, (os.strerror(number).lower(), "check the path, then retry"))
    free = _free_space(path) if "{free}" in what else ""
    what = what.format(free=f" ({free} free)" if free else "", blocker=blocker or path)
    return ConfigError(key, problem=f"cannot write {path}: {what}; {left}. {fix[0].upper()}{fix[1:]}")


def _file_in_the_way(path: Path) -> Optional[Path]:
    """The first of ``path`` and its parents, outermost first, that exists and is not a folder."""
    for folder in (*reversed(path.parents), path):
        if folder.exists() and not folder.is_dir():
            return folder
    return None


def _free_space(path: Path) -> str:
    """Free space on the disk holding ``path`` (its nearest existing parent), e.g. "1.5 MiB"."""
    for folder in (path, *path.parents):
        if folder.is_dir():
            free = float(shutil.disk_usage(folder).free)
            for unit in ("B", "KiB", "MiB", "GiB"):
                if free < 1024 or unit == "GiB":
                    return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
                free /= 1024
    return ""


@contextlib.contextmanager
def _staged(path: Path, *, whole: bool) -> Iterator[Path]:
    """The temporary path to fill for ``path``; put in place when the block ends, removed (with any
    parent folder made for it) when it fails. ``whole``: replace ``path`` entirely; else ``path`` is a
    folder, and an existing one keeps the entries the block did not write."""
    into = not whole and path.is_dir()
    tmp = path / f".lora_nb.tmp{os.getpid()}" if into else path.with_name(f".{path.name}.tmp{os.getpid()}")
    made: list[Path] = []
    try:
        if not whole and path.exists() and not into:  # a folder is written: a file there stays
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        _make_parents(path.parent, made)
        shutil.rmtree(tmp, ignore_errors=True)  # a folder left by a killed write of this process id
        for entry in path.iterdir() if into else ():  # and those of killed processes
            if _left_by_a_dead_write(entry):
                shutil.rmtree(entry, ignore_errors=True)
        yield tmp
        if into:
            for entry in list(tmp.iterdir()):
                _put(entry, path / entry.name)
            tmp.rmdir()
        else:
            _put(tmp, path)
    except BaseException:
        _remove(tmp)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _make_parents(folder: Path, made: list[Path]) -> None:
    """mkdir -p, recording each folder made in ``made`` (outermost first)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        folder.mkdir()
        made.append(folder)


def _put(new: Path, path: Path) -> None:
    """Rename ``new`` to ``path``; a folder replacing something goes through ``.old`` (a rename
    cannot put a folder over a file or a non-empty folder), which is put back if the swap fails."""
    if not (new.is_dir() and (path.exists() or path.is_symlink())):
        os.replace(new, path)
        return
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    _remove(old)
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    """Remove a file or folder tree if it is there; errors are ignored (a read-only disk)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def cache_dir() -> Path:
    """Where lora_nb keeps the tiny models, tokenizers and demo data it builds.

    ``$LORA_NB_CACHE`` if set, else ``~/.cache/lora_nb``.

    Example:
        >>> import os
        >>> saved = os.environ.pop("LORA_NB_CACHE", None)
        >>> cache_dir() == Path.home() / ".cache" / "lora_nb"
        True
        >>> os.environ["LORA_NB_CACHE"] = saved or "/tmp/lora_nb-example"
        >>> cache_dir() == Path(os.environ["LORA_NB_CACHE"])
        True
    """
    return Path(os.environ.get("LORA_NB_CACHE", Path.home() / ".cache" / "lora_nb"))
