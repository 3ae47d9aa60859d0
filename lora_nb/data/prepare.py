"""Read training data from files, datasets or lists, detect its format, split off eval rows.

Formats: ``text``; ``alpaca`` (instruction / input / output); chat ``messages``; ``prompt`` /
``completion``. For all but text the loss falls on the response tokens only (see
:func:`lora_nb.hf.formats.to_sft_dataset`, which :func:`to_sft_rows` follows).
"""

from __future__ import annotations

import numbers
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Union

from .checks import check_columns, check_fraction, check_rows, holds_messages, mixed_row
from .columns import apply, suggest
from .reading import load
from ..core.errors import ConfigError
from ..core.files import expand_user
from ..core.interrupts import interruptible
from ..hf.formats import (DATA_FILES, FORMAT_COLUMNS, UnmaskableTemplate, detect_format, is_split, sft_conversion,
                          split_eval)
from ..core.progress import progress_bar
from ..core.quiet import quietly
from ..recipe.schema import FORMATS, TrainSection

SOURCES = ("a json/jsonl/csv/parquet file, a saved dataset folder, a Hub dataset name, "
           "a datasets.Dataset or DatasetDict, or a list of dicts")
LARGE_ROWS = 20_000  # from about here checking and converting take a second or more: worth a progress bar
LARGE_FILE = 16 * 2**20  # a data file of 16 MiB or more takes a second or more to read
CUT_SAMPLE = 8  # long texts whose cut is tokenised to confirm it still fills max_length


def read(data: Any, split: str = "train", *, key: str = "data.path"):
    """A ``datasets.Dataset`` from any supported source.

    ``key`` is the setting that errors about a file or folder name ("data.eval" for eval data).

    Example:
        >>> read([{"text": "hello"}]).column_names
        ['text']
    """
    from datasets import Dataset, DatasetDict

    given = "data" if key == "data.path" else key  # rows given in memory have no path
    if isinstance(data, Dataset):
        return data
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ConfigError("data.split", split, allowed=list(data))
        return data[split]
    if isinstance(data, list):
        if not data or not all(isinstance(r, dict) for r in data):
            raise ConfigError(given, f"list of {len(data)} items", problem="a list must hold dicts (one per example)")
        # every row's keys: from_list takes the first row's
        columns = dict.fromkeys(name for row in data for name in row)
        try:
            return Dataset.from_dict({name: [row.get(name) for row in data] for name in columns})
        except Exception:  # Arrow keeps one type per column: say which row breaks it
            problem = mixed_row(data, "the rows given")
            if problem is None:
                raise
            raise ConfigError(given, None, problem=f"{problem}; fix or drop that row") from None
    if isinstance(data, (str, os.PathLike)):
        source = expand_user(data)  # ~/data/x.jsonl, $DATA/x.jsonl; a Hub name stays as it is
        if not source:
            raise ConfigError(key, source, problem=f"is empty; give {SOURCES}")
        ext = os.path.splitext(source)[1].lower()
        if os.path.isfile(source) and ext not in DATA_FILES:
            raise ConfigError(key, source, problem="has an unsupported file type", allowed=tuple(DATA_FILES))
        if ext in DATA_FILES and not os.path.exists(source):
            raise ConfigError(key, source, problem="no such file")
        return load(source, split, key)
    raise ConfigError(given, type(data).__name__, problem=f"unsupported source; give {SOURCES}")


@quietly()
def prepare(data: Any, tokenizer: Any, *, format: Optional[str] = None, split: str = "train",
            eval: Union[float, str, Any, None] = None, seed: int = 42, max_length: Optional[int] = None,
            columns: Optional[Union[dict, str]] = None, train_on: Optional[str] = None):
    """Read ``data``, check every row, convert it for TRL and split off eval rows.

    Returns ``(train_dataset, eval_dataset_or_None, format)``. ``max_length``: the tokens TRL keeps
    of each example, from its start (:func:`kept_tokens` of a train section); texts far longer are
    cut before tokenising, to a length that still fills it — a 10 MB row then costs milliseconds,
    not seconds of one uninterruptible tokenizer call. None keeps every text whole. ``train_on``: which
    tokens carry loss (data.train_on; text trains every token, so only all or None). Large data
    gets a progress bar; Ctrl-C stops it within a batch of rows (:func:`lora_nb.core.interrupts.interruptible`).
    ``columns`` (``data.columns``) renames the data's columns to lora_nb's, train and eval rows alike.

    Example:
        >>> train, ev, fmt = prepare("train.jsonl", tok, eval=0.25)
        >>> len(train), len(ev), fmt
        (12, 4, 'alpaca')
    """
    # expanded here too: telling an eval file from a split name looks at the paths
    data, eval = (expand_user(x) if isinstance(x, (str, os.PathLike)) else x for x in (data, eval))
    with interruptible(), _progress() as stages:  # Ctrl-C ends it, also where datasets swallows it
        if isinstance(data, str) and os.path.isfile(data) and os.path.getsize(data) >= LARGE_FILE:
            stages.start(f"reading {os.path.basename(data)}")
        rows = apply(read(data, split), columns)
        large = len(rows) >= LARGE_ROWS or stages.bar is not None
        if large:
            stages.start(f"checking {len(rows)} rows")
        fmt = format or detect(rows)
        if fmt not in FORMATS:
            fits = suggest(rows) if format is None else None
            raise ConfigError("data.format", format or f"columns {rows.column_names}",
                              problem=("cannot be read as any format" + (f"; {fits}" if fits else "")
                                       if format is None else "unknown format"), allowed=FORMATS)
        check_columns(rows.column_names, fmt)
        check_rows(rows, fmt, *_where(data, "data.path"))
        _check_template(rows, fmt, tokenizer)
        if fmt == "text" and train_on not in (None, "all"):
            raise ConfigError("data.train_on", train_on, problem="text rows have no turns: every token trains",
                              allowed=("null", "all"))
        if isinstance(eval, numbers.Real):  # 0.1; 0 or 1 are numbers too, refused as fractions (bools as well)
            check_fraction(eval, len(rows))
            eval = float(eval)
        rows, eval_rows = split_eval(rows, eval, seed, data, read=lambda *a: apply(read(*a, key="data.eval"), columns))
        if eval_rows is not None and not isinstance(eval, float):
            check_columns(eval_rows.column_names, fmt)
            check_rows(eval_rows, fmt, *(("data.eval", f"split {eval!r}") if is_split(data, eval)
                                         else _where(eval, "data.eval")))
            _check_template(eval_rows, fmt, tokenizer)
        if large:
            stages.start("converting rows", total=len(rows) + (len(eval_rows) if eval_rows is not None else 0))
        try:
            train, held = (None if part is None else
                           to_sft_rows(part, fmt, tokenizer, on_batch=_advance, train_on=train_on,
                                       max_chars=_cut_length(part, fmt, tokenizer, max_length))
                           for part in (rows, eval_rows))
        except UnmaskableTemplate as e:
            raise ConfigError("data.train_on", train_on, problem=str(e)) from None
    return train, held, fmt


def to_sft_rows(dataset: Any, fmt: str, tokenizer: Any, max_chars: Optional[int] = None,
                on_batch: Optional[Callable[[int], Any]] = None, train_on: Optional[str] = None) -> Any:
    """:func:`lora_nb.hf.formats.to_sft_dataset`'s rows (the same conversion of each format, which
    exported scripts carry), with every text longer than ``max_chars`` cut to that (None keeps them
    whole); ``on_batch(n)`` hears of each batch of ``n`` rows converted (a progress display).

    Example:
        >>> to_sft_rows(read([{"text": "abcdef"}]), "text", None, max_chars=3)[0]
        {'text': 'abc'}
    """
    convert, kwargs = sft_conversion(fmt, tokenizer, train_on)
    rows = dataset if convert is not None else dataset.select_columns(FORMAT_COLUMNS[fmt])
    if convert is None and max_chars is None:  # nothing to change
        if on_batch is not None:
            on_batch(len(rows))
        return rows

    def cut(text: Optional[str]) -> Optional[str]:
        return text[:max_chars] if max_chars is not None and text is not None and len(text) > max_chars else text

    def cut_turns(value: Any) -> Any:
        # a conversation: each message's content (not recursive: datasets could not hash it)
        return [{**m, "content": cut(m["content"])} for m in value] if isinstance(value, list) else cut(value)

    def rows_for_trl(batch: dict, on_batch: Optional[Callable[[int], Any]]) -> dict:
        # on_batch comes as an argument: datasets hashes it by name, a closure by value
        import gc

        collecting = gc.isenabled()
        gc.disable()  # a batch's thousands of small dicts would set off the cyclic collector, which walks every
        try:  # object of the process (torch and transformers hold hundreds of thousands): 3x the time
            out = batch if convert is None else convert(batch, **kwargs)
            if max_chars is not None:
                out = {name: [cut_turns(v) for v in values] for name, values in out.items()}
        finally:
            if collecting:
                gc.enable()
        if on_batch is not None:
            on_batch(len(next(iter(out.values()))))
        return out

    return rows.map(rows_for_trl, batched=True, remove_columns=rows.column_names, fn_kwargs={"on_batch": on_batch})


def detect(rows: Any) -> Optional[str]:
    """The format of the first row's fields (the columns are every row's: a row of another format
    mixed in is then the one refused), else of all columns; None if none fits.

    Example:
        >>> detect(read([{"instruction": "2+2?", "output": "4"}]))
        'alpaca'
    """
    first = [name for name, value in rows[0].items() if value is not None] if len(rows) else []
    return detect_format(first) or detect_format(rows.column_names)


def kept_tokens(train: TrainSection) -> Optional[int]:
    """The tokens TRL keeps of each training example from its start, for :func:`prepare`'s
    ``max_length``: the train section's max_length, unless TRL keeps more of a text (packing
    strategies that wrap or split long sequences) or its end (``truncation_mode="keep_end"``).

    Example:
        >>> (kept_tokens(TrainSection(max_length=512)),
        ...  kept_tokens(TrainSection(max_length=512, sft={"truncation_mode": "keep_end"})))
        (512, None)
    """
    if train.sft.get("truncation_mode", "keep_start") != "keep_start":
        return None
    if train.packing and train.sft.get("packing_strategy", "bfd") != "bfd":  # bfd truncates each sequence too
        return None
    return train.max_length


def _check_template(rows: Any, fmt: str, tokenizer: Any) -> None:
    """Chat messages are rendered with the tokenizer's chat template: refuse them without one."""
    if getattr(tokenizer, "chat_template", None):
        return
    if fmt == "messages":
        raise ConfigError("data.format", fmt, problem="needs a tokenizer with a chat template; "
                          "set tokenizer.chat_template or use format 'text'")
    if fmt == "prompt_completion" and (holds_messages(rows, "prompt") or holds_messages(rows, "completion")):
        raise ConfigError("data.format", fmt, problem="with lists of messages as prompt and completion needs a "
                          "tokenizer with a chat template; set tokenizer.chat_template or give prompt and completion "
                          "as strings")


def _where(data: Any, key: str) -> tuple[str, str]:
    """The setting and the source a row error names: ``key`` and the file for a path; for rows
    given in memory there is no path, so "data" (or "data.eval")."""
    if isinstance(data, (str, os.PathLike)):
        return key, os.fspath(data)
    return ("data" if key == "data.path" else key), "the rows given"


_stages = threading.local()


class _Stages:
    """:func:`prepare`'s progress display, for large data only: a bar per stage (reading a large
    file, checking, converting), the last one counting rows."""

    def __init__(self) -> None:
        self.bar: Any = None

    def start(self, desc: str, total: Optional[int] = None) -> None:
        self.close()
        self.bar = progress_bar(total=total, desc=desc, unit=" rows", leave=False)

    def update(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def _progress() -> Iterator[_Stages]:
    _stages.current = stages = _Stages()
    try:
        yield stages
    finally:
        _stages.current = None
        stages.close()


def _advance(rows: int) -> None:
    """Count ``rows`` converted on the bar of the :func:`prepare` running in this thread. A
    module-level function: datasets hashes it by name, so the converted rows are cached and
    found again by the next run on the same file."""
    stages = getattr(_stages, "current", None)
    if stages is not None:
        stages.update(rows)


def _cut_length(rows: Any, fmt: str, tokenizer: Any, max_length: Optional[int]) -> Optional[int]:
    """The characters to keep of each text so it still gives more than ``max_length`` tokens
    (TRL cuts there anyway), or None when no text is that long.

    A token spans at most as many characters as the tokenizer's longest token, so that many per
    token fills ``max_length`` — unless the tokenizer's normaliser drops characters or an unknown
    word becomes one token: a few of the cuts are tokenised to confirm they still fill it, and
    otherwise nothing is cut.
    """
    if not max_length or tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return None
    import pyarrow.compute as pc

    texts = _all_texts(rows, fmt)
    longest = max((pc.max(pc.utf8_length(t)).as_py() or 0 for t in texts), default=0)
    if longest <= max_length:
        return None
    chars = (max_length + 1) * max(map(len, tokenizer.get_vocab()), default=1)
    if longest <= chars:
        return None
    heads = [head for t in texts for head in
             pc.utf8_slice_codeunits(pc.filter(t, pc.greater(pc.utf8_length(t), chars)).slice(0, CUT_SAMPLE),
                                     0, chars).to_pylist()]
    tokens = tokenizer(heads[:CUT_SAMPLE], add_special_tokens=False)["input_ids"]
    return chars if all(len(ids) > max_length for ids in tokens) else None


def _all_texts(rows: Any, fmt: str) -> list[Any]:
    """Arrow string arrays of every text that TRL tokenises (the contents of messages for chat)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = rows.with_format("arrow")
    names = {"text": ["text"], "alpaca": ["instruction", "input", "output"], "messages": ["messages"],
             "prompt_completion": ["prompt", "completion"]}[fmt]
    texts = []
    for name in (n for n in names if n in rows.column_names):
        values = table[name].combine_chunks()
        if ((pa.types.is_list(values.type) or pa.types.is_large_list(values.type))
                and pa.types.is_struct(values.type.value_type)):
            values = pc.struct_field(pc.list_flatten(values), "content")
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            texts.append(values)
    return texts
