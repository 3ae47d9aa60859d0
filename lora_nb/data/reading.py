"""Data files read into datasets, and why one cannot be: empty, not UTF-8, the first line that is
not JSON — one line naming the file and the line, instead of datasets' wrapped traceback.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from ..core.errors import ConfigError
from ..hf.formats import DATA_FILES, load_rows


def load(source: str, split: str, key: str) -> Any:
    """:func:`~lora_nb.hf.formats.load_rows` of a file, folder or Hub name, its failures told in one
    line naming ``key`` (the setting): datasets' own errors name neither the file nor the line.

    Example:
        >>> load("missing.jsonl", "train", "data.path")
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: data.path: missing.jsonl is neither a data file nor a saved dataset folder, ...
    """
    try:
        rows = load_rows(source, split)
        if DATA_FILES.get(os.path.splitext(source)[1].lower()) == "json":
            # Arrow's JSON reader keeps bytes that are not UTF-8; training would fail on them
            rows.data.validate(full=True)
    except Exception as error:  # datasets wraps the cause (ArrowInvalid, UnicodeDecodeError, StopIteration) in its own
        if os.path.isfile(source):
            problem = _file_problem(source) or f"{source} could not be read ({_reason(error)})"
        else:
            problem = (f"{source} is neither a data file nor a saved dataset folder, and loading it as a Hub dataset "
                       f"failed ({_reason(error)})")
        raise ConfigError(key, None, problem=problem) from None
    if len(rows) == 0:
        raise ConfigError(key, None, problem=f"{source} has no rows")
    return rows


def _reason(error: BaseException) -> str:
    """The first line of the innermost error: the library's own reason, without its wrappers."""
    while error.__cause__ or error.__context__:
        error = error.__cause__ or error.__context__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _file_problem(path: str) -> Optional[str]:
    """Why a data file failed to load, found by reading it: empty, not UTF-8, or the first bad JSON line."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        return f"{path} has no rows (the file is empty)" if os.path.getsize(path) == 0 else None
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        return f"{path} has no rows (the file is empty or only blank lines)"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        return f"{path} is not UTF-8 text (byte {raw[e.start]:#04x} on line {line}); re-save the file as UTF-8"
    lines = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if ext == ".csv":
        return f"{path} has no rows (only a header line)" if len(lines) < 2 else None
    return _json_problem(path, text, lines, whole=ext == ".json")


def _json_problem(path: str, text: str, lines: list[tuple[int, str]], whole: bool) -> Optional[str]:
    """The first syntax error of a JSON array file, or the first line of JSON Lines that is not an object."""
    if whole and text.lstrip().startswith("["):
        try:
            return None if json.loads(text) else f"{path} has no rows (an empty list)"
        except json.JSONDecodeError as e:
            return f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
    for n, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            return (f"line {n} of {path} is not valid JSON ({e.msg}): {line.strip()[:80]!r}; "
                    "each line must be one JSON object")
        if not isinstance(row, dict):
            return (f"line {n} of {path} is not a JSON object ({line.strip()[:80]!r}); "
                    "each line must be one row like {\"text\": ...}")
    return None
