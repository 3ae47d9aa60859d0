"""Read training data from files, datasets or lists, detect its format, split off eval rows.

Formats: ``text``; ``alpaca`` (instruction / input / output); chat ``messages``; ``prompt`` /
``completion``. For all but text the loss falls on the response tokens only (see
:func:`lora_nb.portable.to_sft_dataset`).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from .errors import ConfigError
from .portable import detect_format, load_rows, to_sft_dataset
from .recipe import FORMATS

SOURCES = "a json/jsonl/csv/parquet file, a saved dataset folder, a Hub dataset name, a datasets.Dataset or DatasetDict, or a list of dicts"


def read(data: Any, split: str = "train"):
    """A ``datasets.Dataset`` from any supported source.

    Example:
        >>> read([{"text": "hello"}]).column_names
        ['text']
    """
    from datasets import Dataset, DatasetDict

    if isinstance(data, Dataset):
        return data
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ConfigError("data.split", split, allowed=list(data))
        return data[split]
    if isinstance(data, list):
        if not data or not all(isinstance(r, dict) for r in data):
            raise ConfigError("data", f"list of {len(data)} items", problem="a list must hold dicts (one per example)")
        return Dataset.from_list(data)
    if isinstance(data, (str, os.PathLike)):
        source = os.fspath(data)
        if not source:
            raise ConfigError("data.path", source, problem=f"is empty; give {SOURCES}")
        ext = os.path.splitext(source)[1].lower()
        if os.path.isfile(source) and ext not in (".json", ".jsonl", ".csv", ".parquet"):
            raise ConfigError("data.path", source, problem="has an unsupported file type", allowed=[".json", ".jsonl", ".csv", ".parquet"])
        if ext in (".json", ".jsonl", ".csv", ".parquet") and not os.path.exists(source):
            raise ConfigError("data.path", source, problem="no such file")
        return load_rows(source, split)
    raise ConfigError("data", type(data).__name__, problem=f"unsupported source; give {SOURCES}")


def prepare(data: Any, tokenizer: Any, *, format: Optional[str] = None, split: str = "train",
            eval: Union[float, str, Any, None] = None, seed: int = 42):
    """Read ``data``, check its format, convert it for TRL and split off eval rows.

    Returns ``(train_dataset, eval_dataset_or_None, format)``.

    Example:
        >>> train, ev, fmt = prepare("alpaca.jsonl", tok, eval=0.1)   # doctest: +SKIP
    """
    rows = read(data, split)
    fmt = format or detect_format(rows.column_names)
    if fmt not in FORMATS or fmt is None:
        raise ConfigError("data.format", format or f"columns {rows.column_names}",
                          problem="cannot be read as any format" if format is None else "unknown format",
                          allowed=[f for f in FORMATS if f])
    _check_columns(rows.column_names, fmt)
    if fmt in ("messages",) and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("data.format", fmt, problem="needs a tokenizer with a chat template; set tokenizer.chat_template or use format 'text'")
    eval_rows = None
    if isinstance(eval, float):
        parts = rows.train_test_split(test_size=eval, seed=seed)
        rows, eval_rows = parts["train"], parts["test"]
    elif isinstance(eval, str) and not os.path.exists(eval) and not isinstance(data, (list,)) and _is_split(data, eval):
        eval_rows = read(data, eval)
    elif eval is not None:
        eval_rows = read(eval)
        _check_columns(eval_rows.column_names, fmt)
    train = to_sft_dataset(rows, fmt, tokenizer)
    return train, (to_sft_dataset(eval_rows, fmt, tokenizer) if eval_rows is not None else None), fmt


REQUIRED = {"text": {"text"}, "alpaca": {"instruction", "output"}, "messages": {"messages"},
            "prompt_completion": {"prompt", "completion"}}


def _check_columns(columns: list[str], fmt: str) -> None:
    missing = REQUIRED[fmt] - set(columns)
    if missing:
        raise ConfigError("data.format", fmt, problem=f"needs columns {sorted(missing)} that the data lacks (it has {columns})")


def _is_split(data: Any, name: str) -> bool:
    from datasets import DatasetDict

    return isinstance(data, DatasetDict) and name in data or isinstance(data, str) and not os.path.isfile(data)
