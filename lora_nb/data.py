"""Read training data from files, datasets or lists, detect its format, split off eval rows.

Formats: ``text``; ``alpaca`` (instruction / input / output); chat ``messages``; ``prompt`` /
``completion``. For all but text the loss falls on the response tokens only (see
:func:`lora_nb.portable.to_sft_dataset`).
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator, Optional, Union

from .errors import ConfigError
from .files import expand_user
from .portable import DATA_FILES, detect_format, is_split, load_rows, split_eval, to_sft_dataset
from .quiet import quietly
from .recipe import FORMATS

SOURCES = "a json/jsonl/csv/parquet file, a saved dataset folder, a Hub dataset name, a datasets.Dataset or DatasetDict, or a list of dicts"


def read(data: Any, split: str = "train", *, key: str = "data.path"):
    """A ``datasets.Dataset`` from any supported source.

    ``key`` is the setting that errors about a file or folder name ("data.eval" for eval data).

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
        source = expand_user(data)  # ~/data/x.jsonl, $DATA/x.jsonl; a Hub name stays as it is
        if not source:
            raise ConfigError(key, source, problem=f"is empty; give {SOURCES}")
        ext = os.path.splitext(source)[1].lower()
        if os.path.isfile(source) and ext not in DATA_FILES:
            raise ConfigError(key, source, problem="has an unsupported file type", allowed=tuple(DATA_FILES))
        if ext in DATA_FILES and not os.path.exists(source):
            raise ConfigError(key, source, problem="no such file")
        return _load(source, split, key)
    raise ConfigError("data", type(data).__name__, problem=f"unsupported source; give {SOURCES}")


def prepare(data: Any, tokenizer: Any, *, format: Optional[str] = None, split: str = "train",
            eval: Union[float, str, Any, None] = None, seed: int = 42):
    """Read ``data``, check its format, convert it for TRL and split off eval rows.

    Returns ``(train_dataset, eval_dataset_or_None, format)``.

    Example:
        >>> train, ev, fmt = prepare("alpaca.jsonl", tok, eval=0.1)   # doctest: +SKIP
    """
    # expanded here too: telling an eval file from a split name looks at the paths
    data, eval = (expand_user(x) if isinstance(x, (str, os.PathLike)) else x for x in (data, eval))
    rows = read(data, split)
    fmt = format or detect_format(rows.column_names)
    if fmt not in FORMATS:
        raise ConfigError("data.format", format or f"columns {rows.column_names}",
                          problem="cannot be read as any format" if format is None else "unknown format",
                          allowed=FORMATS)
    _check_columns(rows.column_names, fmt)
    _check_rows(rows, fmt, *_where(data, "data.path"))
    if fmt in ("messages",) and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("data.format", fmt, problem="needs a tokenizer with a chat template; set tokenizer.chat_template or use format 'text'")
    if isinstance(eval, float):
        _check_fraction(eval, len(rows))
    rows, eval_rows = split_eval(rows, eval, seed, data, read=partial(read, key="data.eval"))
    if eval_rows is not None and not isinstance(eval, float):
        _check_columns(eval_rows.column_names, fmt)
        _check_rows(eval_rows, fmt, *(("data.eval", f"split {eval!r}") if is_split(data, eval) else _where(eval, "data.eval")))
    train = to_sft_dataset(rows, fmt, tokenizer)
    return train, (to_sft_dataset(eval_rows, fmt, tokenizer) if eval_rows is not None else None), fmt


REQUIRED = {"text": ("text",), "alpaca": ("instruction", "output"), "messages": ("messages",),
            "prompt_completion": ("prompt", "completion")}


def _check_columns(columns: list[str], fmt: str) -> None:
    missing = [c for c in REQUIRED[fmt] if c not in columns]
    if missing:
        raise ConfigError("data.format", fmt, problem=f"needs columns {missing} that the data lacks (it has {columns})")


NEEDS = {"text": "a text", "alpaca": "an instruction and an output (input is optional)",
         "messages": "messages, each with a role and content, and an assistant turn", "prompt_completion": "a prompt and a completion"}


def _where(data: Any, key: str) -> tuple[str, str]:
    """The setting and the source a row error names: ``key`` and the file for a path; for rows
    given in memory there is no path, so "data" (or "data.eval")."""
    if isinstance(data, (str, os.PathLike)):
        return key, os.fspath(data)
    return ("data" if key == "data.path" else key), "the rows given"


def _check_rows(rows: Any, fmt: str, key: str, source: str) -> None:
    """Refuse rows whose needed fields are null. The readers fill a field a row lacks with None
    (so do rows of another format mixed in), and None would train as the text "None"."""
    if len(rows) == 0:
        raise ConfigError(key, None, problem=f"{source} has no rows")
    bad = _first_bad_row(rows, fmt)
    if bad is not None:
        row, what = bad
        raise ConfigError(key, None, problem=f"row {row + 1} of {source} has {what} (null or missing); every {fmt} row needs {NEEDS[fmt]}. "
                                             "Fix or drop that row (rows of another format lack these fields too)")


def _first_bad_row(rows: Any, fmt: str) -> Optional[tuple[int, str]]:
    """(0-based index, what it lacks) of the first row lacking a field ``fmt`` needs, else None."""
    import pyarrow.compute as pc

    table = rows.with_format("arrow")  # whole columns in Arrow: a null count, not a Python loop per row
    bad = []  # (row, what) for each field's first null
    for column in REQUIRED[fmt]:
        values = table[column].combine_chunks()
        nulls = pc.is_null(values)
        if pc.any(nulls).as_py():
            bad.append((pc.index(nulls, True).as_py(), f"no {column!r}"))
        if fmt == "messages":
            bad += _bad_turns(values)
    if not bad:
        return None
    row = min(r for r, _ in bad)
    return row, " and ".join(what for r, what in bad if r == row)


def _bad_turns(conversations: Any) -> list[tuple[int, str]]:
    """(row, what) of the first message with a null role, and of the first with a null content."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = conversations.type
    if not (pa.types.is_list(kind) and pa.types.is_struct(kind.value_type)):
        return []
    turns, parents = pc.list_flatten(conversations), pc.list_parent_indices(conversations)
    bad = []
    for field in ("role", "content"):
        if kind.value_type.get_field_index(field) < 0:
            continue
        nulls = pc.is_null(pc.struct_field(turns, field))
        if pc.any(nulls).as_py():
            bad.append((parents[pc.index(nulls, True).as_py()].as_py(), f"a message with no {field!r}"))
    if not bad and kind.value_type.get_field_index("role") >= 0:  # nothing to learn from a conversation with no answer
        answered = pc.filter(parents, pc.equal(pc.struct_field(turns, "role"), "assistant"))
        unanswered = pc.and_(pc.invert(pc.is_in(pa.array(range(len(conversations))), value_set=answered)),
                             pc.is_valid(conversations))  # a null conversation is reported as such
        if pc.any(unanswered).as_py():
            bad.append((pc.index(unanswered, True).as_py(), "no 'assistant' turn"))
    return bad


def _check_fraction(fraction: float, n: int) -> None:
    """Refuse an eval fraction that leaves no rows to train on (datasets rounds the eval rows up)."""
    if not 0 < fraction < 1:
        raise ConfigError("data.eval", fraction, problem="a fraction must be between 0 and 1")
    held = math.ceil(fraction * n)
    if held >= n:
        most = math.floor(100 * (n - 1) / n) / 100
        fix = f"with {n} rows use a fraction of at most {most}, or an eval file" if most > 0 else "give more rows, or an eval file"
        raise ConfigError("data.eval", fraction, problem=f"holds out every row ({held} of {n}), leaving none to train on; {fix}")


def _load(source: str, split: str, key: str):
    """:func:`load_rows`, its failures told in one line: datasets' own errors name neither the file nor the line."""
    try:
        rows = load_rows(source, split)
        if DATA_FILES.get(os.path.splitext(source)[1].lower()) == "json":
            rows.data.validate(full=True)  # Arrow's JSON reader keeps bytes that are not UTF-8; training would fail on them
    except Exception as error:  # datasets wraps the cause (ArrowInvalid, UnicodeDecodeError, StopIteration) in its own
        if os.path.isfile(source):
            problem = _file_problem(source) or f"{source} could not be read ({_reason(error)})"
        else:
            problem = f"{source} is neither a data file nor a saved dataset folder, and loading it as a Hub dataset failed ({_reason(error)})"
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
            return f"line {n} of {path} is not valid JSON ({e.msg}): {line.strip()[:80]!r}; each line must be one JSON object"
        if not isinstance(row, dict):
            return f"line {n} of {path} is not a JSON object ({line.strip()[:80]!r}); each line must be one row like {{\"text\": ...}}"
    return None


class Preview:
    """Tokenised examples with the tokens that carry loss marked: highlighted in notebooks,
    ``[[in double brackets]]`` in terminals.

    Example:
        >>> preview("train.jsonl", tok, n=2)   # doctest: +SKIP
    """

    def __init__(self, rows: list[list[tuple[str, bool]]], fmt: str) -> None:
        self.rows, self.format = rows, fmt

    def loss_text(self, i: int) -> str:
        """The text of example ``i``'s loss-carrying tokens."""
        return "".join(t for t, loss in self.rows[i] if loss)

    def __str__(self) -> str:
        lines = [f"format: {self.format}; [[…]] carries loss"]
        for row in self.rows:
            text, inside = "", False
            for token, loss in row:
                if loss != inside:
                    text += "[[" if loss else "]]"
                    inside = loss
                text += token
            lines.append(text + ("]]" if inside else ""))
        return "\n---\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        def span(token: str, loss: bool) -> str:
            style = "background:#c8f7c5;font-weight:bold" if loss else "color:#888"
            return f"<span style='{style}'>{html.escape(token)}</span>"

        blocks = "".join(f"<pre style='white-space:pre-wrap;border:1px solid #ddd;padding:4px'>{''.join(span(t, l) for t, l in row)}</pre>"
                         for row in self.rows)
        return f"<div><b>format: {html.escape(self.format)}</b> — <span style='background:#c8f7c5'>highlighted</span> tokens carry loss{blocks}</div>"


@quietly()
def preview(data: Any, tokenizer: Any, *, n: int = 3, format: Optional[str] = None, split: str = "train",
            max_length: int = 1024) -> Preview:
    """The first ``n`` examples as training will see them: TRL's own tokenisation and loss mask.

    Example:
        >>> print(preview([{"prompt": "2+2=", "completion": "4"}], tok))   # doctest: +SKIP
        format: prompt_completion; [[…]] carries loss
        2+2=[[4</s>]]
    """
    from .compat import sft_config

    rows = read(data, split)
    rows = rows.select(range(min(n, len(rows))))
    train, _, fmt = prepare(rows, tokenizer, format=format)
    config = sft_config(dict(output_dir="lora_nb-preview", report_to="none", max_length=max_length, bf16=False,
                             assistant_only_loss="messages" in train.column_names, dataset_num_proc=None))
    out = [[(tokenizer.decode([i]), label != -100) for i, label in zip(ids, labels)]
           for ids, labels in trl_prepare(train, tokenizer, config)]
    return Preview(out, fmt)


def trl_prepare(dataset: Any, tokenizer: Any, config: Any) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example, as a trainer built with ``config`` sees them: TRL's own
    tokenisation, chat template and loss mask, with -100 where a token carries no loss.

    Through TRL's public interface only: a real ``SFTTrainer`` prepares ``dataset`` for a stand-in
    model (one layer of width 8 with the tokenizer's vocabulary: no model of the user's is touched),
    and its own data collator turns each prepared example into labels — whichever of the two builds
    them in the installed release (the collator from TRL 1.0, the dataset since). The random state
    is left as it was (a trainer seeds it).

    Example:
        >>> config = sft_config(dict(output_dir="o", report_to="none", bf16=False, max_length=None))   # doctest: +SKIP
        >>> [(ids, labels)] = trl_prepare(Dataset.from_list([{"prompt": "2+2=", "completion": "4"}]), tok, config)  # doctest: +SKIP
        >>> [i for i, label in zip(ids, labels) if label != -100] == ids[-2:]   # doctest: +SKIP
        True
    """
    from trl import SFTTrainer

    with _random_state_kept():
        trainer = SFTTrainer(model=_stand_in(len(tokenizer)), args=config, train_dataset=dataset, processing_class=tokenizer)
    prepared = []
    for example in trainer.train_dataset:
        labels = trainer.data_collator([example])["labels"][0]
        prepared.append((list(example["input_ids"]), labels[:len(example["input_ids"])].tolist()))
    return prepared


_STAND_INS: dict = {}


def _stand_in(vocab_size: int) -> Any:
    """The smallest causal LM with ``vocab_size`` tokens, built once per size (about a second)."""
    if vocab_size not in _STAND_INS:
        import transformers as tf

        config = tf.LlamaConfig(vocab_size=vocab_size, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                num_attention_heads=1, num_key_value_heads=1)
        _STAND_INS[vocab_size] = tf.LlamaForCausalLM(config)
    return _STAND_INS[vocab_size]


@contextmanager
def _random_state_kept() -> Iterator[None]:
    import random

    import numpy as np
    import torch

    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        yield
    random.setstate(python)
    np.random.set_state(numpy)
