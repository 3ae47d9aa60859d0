"""Writing files without losing anything: atomic writes, and the no-overwrite rule.

The rule: lora_nb never writes into a non-empty folder or over an existing file it did not create
for the current run, unless asked (``overwrite=True`` in the API, ``--force`` in the CLI and the
magics). The error names the path and the option.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Union

from .errors import ConfigError
from .portable import expand_user  # noqa: F401 - defined there: exported scripts expand paths the same way

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
        return any(path.iterdir())
    return path.exists()


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
    crash) sees the old file or the new one, never half of one.

    Example:
        >>> atomic_write("/tmp/lora_nb-doctest.txt", "hello").read_text()
        'hello'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def replace_folder(folder: Path, fill) -> Path:
    """Fill a fresh temporary sibling of ``folder`` with ``fill(tmp)``, then swap it in.

    At every moment one complete version is on disk: ``folder`` itself, or (during the two
    renames of the swap) ``folder.old``.
    """
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    fill(tmp)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


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
