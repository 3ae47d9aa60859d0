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


def preview(data: Any, tokenizer: Any, *, n: int = 3, format: Optional[str] = None, split: str = "train",
            max_length: int = 1024) -> Preview:
    """The first ``n`` examples as training will see them: TRL's own tokenisation and loss mask.

    Example:
        >>> print(preview([{"prompt": "2+2=", "completion": "4"}], tok))   # doctest: +SKIP
        format: prompt_completion; [[…]] carries loss
        2+2=[[4</s>]]
    """
    from types import SimpleNamespace

    from trl import SFTConfig, SFTTrainer

    from .portable import masks_assistant_turns

    rows = read(data, split)
    rows = rows.select(range(min(n, len(rows))))
    train, _, fmt = prepare(rows, tokenizer, format=format)
    assistant_only = "messages" in train.column_names
    config = SFTConfig(output_dir="lora_nb-preview", report_to="none", max_length=max_length, bf16=False,
                       assistant_only_loss=assistant_only, dataset_num_proc=None)
    chat_template = None
    if assistant_only and masks_assistant_turns(tokenizer):
        from trl.chat_template_utils import get_training_chat_template, has_generation_markers

        chat_template = None if has_generation_markers(tokenizer.chat_template) else get_training_chat_template(tokenizer)
    # TRL's own preparation (a method that needs only these three attributes), so the preview
    # shows exactly what SFTTrainer will train on.
    trainer_state = SimpleNamespace(_tokenizer=tokenizer, chat_template=chat_template,
                                    completion_only_loss="prompt" in train.column_names)
    done = SFTTrainer._prepare_dataset(trainer_state, train, tokenizer, config, False, None, "preview")
    out = []
    for example in done:
        ids, labels = example["input_ids"], example.get("labels") or example["input_ids"]
        out.append([(tokenizer.decode([i]), label != -100) for i, label in zip(ids, labels)])
    return Preview(out, fmt)
