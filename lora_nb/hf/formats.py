"""Data files and formats: reading rows, detecting the format from the columns, the eval split, and
turning rows into TRL's formats.

Shared with exported scripts (:mod:`lora_nb.export.script`): standard library and the HF stack only.
"""

from __future__ import annotations

from .folders import expand_user


ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"


ALPACA_PROMPT_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


# The data files read by extension, and the datasets builder that reads each.
DATA_FILES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def detect_format(columns):
    """The data format its columns imply: messages, alpaca, prompt_completion or text; None if none fits."""
    columns = set(columns)
    if "messages" in columns:
        return "messages"
    if {"instruction", "output"} <= columns:
        return "alpaca"
    if {"prompt", "completion"} <= columns:
        return "prompt_completion"
    if "text" in columns:
        return "text"
    return None


def alpaca_user_text(row):
    """The user turn of an alpaca row: the instruction, then the input (if any) after a blank line."""
    extra = alpaca_input(row)
    return f"{row['instruction']}\n\n{extra}" if extra else str(row["instruction"])


def alpaca_input(row):
    """An alpaca row's input as text ("" when absent or null)."""
    value = row.get("input")
    return "" if value is None else str(value).strip()


def load_rows(source, split="train"):
    """A datasets.Dataset from a json/jsonl/csv/parquet file, a folder, or a Hub dataset name."""
    import os

    from datasets import load_dataset, load_from_disk

    source = expand_user(str(source))  # ~/data/train.jsonl, $DATA/train.jsonl; a Hub name stays as it is
    ext = os.path.splitext(source)[1].lower()
    if os.path.isfile(source) and ext in DATA_FILES:
        with open(source, "rb") as f:  # a byte order mark: datasets 5 reads past it, 4.x fails on it unless told
            bom = DATA_FILES[ext] == "json" and f.read(3) == b"\xef\xbb\xbf"
        options = {"encoding": "utf-8-sig"} if bom else {}
        if DATA_FILES[ext] == "csv":  # every column as text, as written: pandas would make "007" the number 7
            import csv

            from datasets import Features, Value

            with open(source, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            options["features"] = Features({name: Value("string") for name in header})
        return load_dataset(DATA_FILES[ext], data_files=source, split="train", **options)
    saved = ("dataset_info.json", "dataset_dict.json")  # save_to_disk's folder of a Dataset, of a DatasetDict
    if os.path.isdir(source) and any(os.path.exists(os.path.join(source, name)) for name in saved):
        data = load_from_disk(source)
        return data[split] if hasattr(data, "keys") else data
    return load_dataset(source, split=split)


def split_eval(rows, eval, seed, source, read=load_rows):
    """(train rows, eval rows): ``eval`` is a fraction of ``rows`` held out by datasets' seeded
    split, another split of ``source`` (see :func:`is_split`), or eval data of its own (a file);
    without ``eval`` the eval rows are None. ``read(data, split)`` reads eval rows.

    Example:
        >>> from datasets import Dataset
        >>> train, held = split_eval(Dataset.from_list([{"text": str(i)} for i in range(10)]), 0.2, 0, None)
        >>> len(train), len(held)
        (8, 2)
    """
    if eval is None:
        return rows, None
    if isinstance(eval, float):
        parts = rows.train_test_split(test_size=eval, seed=seed)
        return parts["train"], parts["test"]
    if is_split(source, eval):
        return rows, read(source, eval)
    return rows, read(eval, "train")


def is_split(source, name):
    """Whether eval ``name`` is a split of ``source`` rather than a file: ``name`` is no existing
    path, and ``source`` is a DatasetDict holding it, or a Hub name or saved-dataset folder."""
    import os

    if not isinstance(name, str) or os.path.exists(name):
        return False
    if hasattr(source, "keys"):  # a DatasetDict
        return name in source
    return isinstance(source, str) and not os.path.isfile(source)


def to_sft_dataset(dataset, fmt, tokenizer, max_chars=None, on_batch=None):
    """Rows in one of TRL's SFT formats, so the loss falls on the response tokens only.

    alpaca becomes prompt/completion (chat turns when the tokenizer has a chat template, else the
    alpaca prompt). messages stay whole when the template can mask assistant turns (TRL's
    assistant_only_loss); otherwise the last assistant turn becomes the completion. text and
    prompt_completion pass through. ``max_chars`` cuts every text longer than that (None keeps
    them whole); ``on_batch(n)`` hears of each batch of ``n`` rows converted (a progress display).
    Rows are converted a thousand at a time: no per-row Python call.

    Example:
        >>> from datasets import Dataset
        >>> to_sft_dataset(Dataset.from_list([{"instruction": "2+2?", "output": "4"}]), "alpaca", None)[0]
        {'prompt': '### Instruction:\\n2+2?\\n\\n### Response:\\n', 'completion': '4'}
    """
    chat = bool(getattr(tokenizer, "chat_template", None))
    last_turn = fmt == "messages" and not masks_assistant_turns(tokenizer)
    rows = dataset if fmt == "alpaca" or last_turn else dataset.select_columns(
        {"text": ["text"], "messages": ["messages"], "prompt_completion": ["prompt", "completion"]}[fmt])
    if rows is not dataset and max_chars is None:  # nothing to change
        if on_batch is not None:
            on_batch(len(rows))
        return rows

    def cut(text):
        return text[:max_chars] if max_chars is not None and text is not None and len(text) > max_chars else text

    def cut_turns(value):  # a conversation: each message's content (not recursive: datasets could not hash it)
        return [{**m, "content": cut(m["content"])} for m in value] if isinstance(value, list) else cut(value)

    def rows_for_trl(batch):
        n = len(next(iter(batch.values())))
        if fmt == "alpaca":
            rows = [{"instruction": i, "input": x, "output": o}
                    for i, x, o in zip(batch["instruction"], batch.get("input", [None] * n), batch["output"])]
            if chat:
                return {"prompt": [[{"role": "user", "content": cut(alpaca_user_text(r))}] for r in rows],
                        "completion": [[{"role": "assistant", "content": cut(r["output"])}] for r in rows]}
            return {"prompt": [cut((ALPACA_PROMPT_INPUT if alpaca_input(r) else ALPACA_PROMPT)
                                   .format(instruction=r["instruction"], input=alpaca_input(r))) for r in rows],
                    "completion": [cut(r["output"]) for r in rows]}
        if last_turn:
            ends = [max(i for i, m in enumerate(turns) if m["role"] == "assistant") for turns in batch["messages"]]
            return {"prompt": [cut_turns(turns[:last]) for turns, last in zip(batch["messages"], ends)],
                    "completion": [cut_turns(turns[last:last + 1]) for turns, last in zip(batch["messages"], ends)]}
        return {name: [cut_turns(v) for v in values] for name, values in batch.items()}

    def convert(batch, on_batch):  # on_batch comes as an argument: datasets hashes it by name, a closure by value
        import gc

        collecting = gc.isenabled()
        gc.disable()  # a batch's thousands of small dicts would set off the cyclic collector, which walks every
        try:  # object of the process (torch and transformers hold hundreds of thousands): 3x the time
            out = rows_for_trl(batch)
        finally:
            if collecting:
                gc.enable()
        if on_batch is not None:
            on_batch(len(next(iter(out.values()))))
        return out

    return rows.map(convert, batched=True, remove_columns=rows.column_names, fn_kwargs={"on_batch": on_batch})


def masks_assistant_turns(tokenizer):
    """Whether TRL can compute an assistant-only loss mask with this tokenizer's chat template."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return False
    if has_generation_markers(template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except Exception:  # TRL knows no training variant of this template
        return False
