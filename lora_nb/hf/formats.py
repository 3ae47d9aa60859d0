"""Data files and formats: reading rows, detecting the format from the columns, the eval split, and
turning rows into TRL's formats.

Shared with exported scripts (:mod:`lora_nb.export.script`): standard library and the HF stack only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .folders import expand_user

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase


ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"


ALPACA_PROMPT_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


# The data files read by extension, and the datasets builder that reads each.
DATA_FILES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


# The columns lora_nb reads of each format.
FIELDS = {"text": ["text"], "alpaca": ["instruction", "input", "output"], "messages": ["messages"],
          "prompt_completion": ["prompt", "completion"]}


# The columns TRL reads of each format it takes as they are (alpaca rows are converted).
FORMAT_COLUMNS = {"text": ["text"], "messages": ["messages"], "prompt_completion": ["prompt", "completion"]}


def detect_format(columns: Iterable[str]) -> str | None:
    """The data format its columns imply: messages, alpaca, prompt_completion or text; None if none fits.

    Example:
        >>> detect_format(["instruction", "input", "output"])
        'alpaca'
    """
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


def alpaca_user_text(row: dict[str, Any]) -> str:
    """The user turn of an alpaca row: the instruction, then the input (if any) after a blank line.

    Example:
        >>> alpaca_user_text({"instruction": "Add", "input": "2 2"})
        'Add\\n\\n2 2'
    """
    extra = alpaca_input(row.get("input"))
    return f"{row['instruction']}\n\n{extra}" if extra else str(row["instruction"])


def alpaca_input(value: Any) -> str:
    """An alpaca row's input as text ("" when absent or null).

    Example:
        >>> alpaca_input(None), alpaca_input(" 2 2 ")
        ('', '2 2')
    """
    return "" if value is None else str(value).strip()


def load_rows(source: str, split: str = "train") -> Dataset:
    """A datasets.Dataset from a json/jsonl/csv/parquet file, a folder, or a Hub dataset name.

    Example:
        >>> len(load_rows("train.jsonl"))
        16
    """
    source = expand_user(str(source))  # ~/data/train.jsonl, $DATA/train.jsonl; a Hub name stays as it is
    kind = DATA_FILES.get(os.path.splitext(source)[1].lower())
    if kind is not None and os.path.isfile(source):
        return {"json": load_json, "csv": load_csv, "parquet": load_parquet}[kind](source)
    return load_saved_or_hub(source, split)


def load_json(source: str) -> Dataset:
    """The rows of a .json or .jsonl file.

    Example:
        >>> load_json("train.jsonl").column_names
        ['instruction', 'input', 'output']
    """
    from datasets import load_dataset

    source = expand_user(source)
    with open(source, "rb") as f:  # a byte order mark: datasets 5 reads past it, 4.x fails on it unless told
        options = {"encoding": "utf-8-sig"} if f.read(3) == b"\xef\xbb\xbf" else {}
    return load_dataset("json", data_files=source, split="train", **options)


def load_csv(source: str) -> Dataset:
    """The rows of a .csv file, every column as text, as written: pandas would make "007" the number 7.

    Example:
        >>> _ = Path("train.csv").write_text("id,text\\n007,James\\n")
        >>> load_csv("train.csv")[0]["id"]
        '007'
    """
    import csv

    from datasets import Features, Value, load_dataset

    source = expand_user(source)
    with open(source, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    features = Features({name: Value("string") for name in header})
    return load_dataset("csv", data_files=source, split="train", features=features)


def load_parquet(source: str) -> Dataset:
    """The rows of a .parquet file.

    Example:
        >>> _ = load_json("train.jsonl").to_parquet("train.parquet")
        >>> len(load_parquet("train.parquet"))
        16
    """
    from datasets import load_dataset

    return load_dataset("parquet", data_files=expand_user(source), split="train")


def load_saved_or_hub(source: str, split: str = "train") -> Dataset:
    """``split`` of a folder written by ``save_to_disk`` (a Dataset's or a DatasetDict's), else of a
    Hub dataset.

    Example:
        >>> load_json("train.jsonl").save_to_disk("saved")  # doctest: +ELLIPSIS
        >>> load_saved_or_hub("saved", "train").num_rows   # or a Hub dataset: load_saved_or_hub("tatsu-lab/alpaca")
        16
    """
    from datasets import load_dataset, load_from_disk

    source = expand_user(source)
    saved = ("dataset_info.json", "dataset_dict.json")  # save_to_disk's folder of a Dataset, of a DatasetDict
    if os.path.isdir(source) and any(os.path.exists(os.path.join(source, name)) for name in saved):
        data = load_from_disk(source)
        return data[split] if hasattr(data, "keys") else data
    return load_dataset(source, split=split)


def split_eval(rows: Dataset, eval: float | str | None, seed: int, source: Any,
               read: Callable[[str, str], Dataset] = load_rows) -> tuple[Dataset, Dataset | None]:
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
        return hold_out(rows, eval, seed)
    if is_split(source, eval):
        return rows, read(source, eval)
    return rows, read(eval, "train")


def hold_out(rows: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train rows, eval rows): ``fraction`` of ``rows`` held out by datasets' seeded split.

    Example:
        >>> from datasets import Dataset
        >>> [len(part) for part in hold_out(Dataset.from_list([{"text": str(i)} for i in range(10)]), 0.2, 0)]
        [8, 2]
    """
    parts = rows.train_test_split(test_size=fraction, seed=seed)
    return parts["train"], parts["test"]


def is_split(source: Any, name: Any) -> bool:
    """Whether eval ``name`` is a split of ``source`` rather than a file: ``name`` is no existing
    path, and ``source`` is a DatasetDict holding it, or a Hub name or saved-dataset folder.

    Example:
        >>> is_split({"train": None, "validation": None}, "validation")
        True
    """
    if not isinstance(name, str) or os.path.exists(name):
        return False
    if hasattr(source, "keys"):  # a DatasetDict
        return name in source
    return isinstance(source, str) and not os.path.isfile(source)


def to_sft_dataset(dataset: Dataset, fmt: str, tokenizer: PreTrainedTokenizerBase | None,
                   train_on: str | None = None) -> Dataset:
    """Rows in one of TRL's SFT formats, so the loss falls on the tokens ``train_on`` says (see
    :func:`sft_conversion`; :func:`loss_flags` gives the SFTConfig flags that go with them).

    alpaca becomes prompt/completion (chat turns when the tokenizer has a chat template, else the
    alpaca prompt: :func:`alpaca_batch`). messages stay whole when the template can mask assistant
    turns (TRL's assistant_only_loss) or every token trains; the last assistant turn becomes the
    completion (:func:`last_turn_batch`) for last_turn, or by default when the template has no marks;
    every assistant turn without marks becomes token ids with their mask (:func:`assistant_masks_batch`).
    text and prompt_completion pass through. Rows are converted a thousand at a time.

    Example:
        >>> from datasets import Dataset
        >>> to_sft_dataset(Dataset.from_list([{"instruction": "2+2?", "output": "4"}]), "alpaca", None)[0]
        {'prompt': '### Instruction:\\n2+2?\\n\\n### Response:\\n', 'completion': '4'}
    """
    convert, kwargs = sft_conversion(fmt, tokenizer, train_on)
    if convert is None:
        return dataset.select_columns(FORMAT_COLUMNS[fmt])
    return dataset.map(convert, batched=True, remove_columns=dataset.column_names, fn_kwargs=kwargs)


def sft_conversion(fmt: str, tokenizer: PreTrainedTokenizerBase | None,
                   train_on: str | None = None) -> tuple[Callable[..., dict] | None, dict]:
    """(the function that turns a batch of ``fmt`` rows into TRL's format, its keywords); the function
    is None where TRL takes the rows as they are (their :data:`FORMAT_COLUMNS`). ``train_on`` is
    data.train_on, resolved by :func:`effective_train_on`.

    Example:
        >>> sft_conversion("alpaca", None)[0].__name__, sft_conversion("text", None)
        ('alpaca_batch', (None, {}))
    """
    if fmt == "alpaca":
        return alpaca_batch, {"chat": bool(getattr(tokenizer, "chat_template", None))}
    if fmt != "messages":
        return None, {}
    train_on = effective_train_on(fmt, tokenizer, train_on)
    if train_on == "last_turn":
        return last_turn_batch, {}
    if train_on == "assistant" and not masks_assistant_turns(tokenizer):
        return assistant_masks_batch, {"tokenizer": tokenizer}
    return None, {}


def effective_train_on(fmt: str, tokenizer: PreTrainedTokenizerBase | None, train_on: str | None) -> str:
    """What data.train_on ``train_on`` comes to for ``fmt`` rows: text trains every token ("all");
    alpaca and prompt_completion have one response, so last_turn and assistant both train the
    completion ("assistant"); messages by default train every assistant turn where the chat template
    marks them, else the last one.

    Example:
        >>> effective_train_on("alpaca", None, None), effective_train_on("text", None, "all")
        ('assistant', 'all')
    """
    if fmt == "text" or train_on == "all":
        return "all"
    if fmt == "messages" and train_on is None:
        return "assistant" if masks_assistant_turns(tokenizer) else "last_turn"
    return "assistant" if fmt != "messages" else train_on


def loss_flags(columns: Iterable[str], train_on: str | None) -> dict[str, bool]:
    """The SFTConfig flags that make TRL's loss fall where ``train_on`` says on rows with ``columns``
    (as :func:`to_sft_dataset` made them): assistant turns of whole conversations, completions only,
    unless every token trains.

    Example:
        >>> loss_flags(["messages"], None), loss_flags(["prompt", "completion"], "all")
        ({'assistant_only_loss': True}, {'assistant_only_loss': False, 'completion_only_loss': False})
    """
    if train_on == "all":
        return {"assistant_only_loss": False, "completion_only_loss": False}
    return {"assistant_only_loss": "messages" in columns}


def alpaca_batch(batch: dict[str, list], chat: bool) -> dict[str, list]:
    """A batch of alpaca rows as prompt/completion: chat turns where the tokenizer has a chat template
    (``chat``), else the alpaca prompt and the output as text.

    Example:
        >>> alpaca_batch({"instruction": ["2+2?"], "output": ["4"]}, chat=True)
        {'prompt': [[{'role': 'user', 'content': '2+2?'}]], 'completion': [[{'role': 'assistant', 'content': '4'}]]}
    """
    inputs = batch.get("input", [None] * len(batch["instruction"]))
    rows = [{"instruction": i, "input": alpaca_input(x)} for i, x in zip(batch["instruction"], inputs)]
    if chat:
        return {"prompt": [[{"role": "user", "content": alpaca_user_text(r)}] for r in rows],
                "completion": [[{"role": "assistant", "content": output}] for output in batch["output"]]}
    return {"prompt": [(ALPACA_PROMPT_INPUT if r["input"] else ALPACA_PROMPT).format(**r) for r in rows],
            "completion": batch["output"]}


def last_turn_batch(batch: dict[str, list]) -> dict[str, list]:
    """A batch of messages rows as prompt (the turns before the last assistant turn) and completion (that turn).

    Example:
        >>> last_turn_batch({"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]})
        {'prompt': [[{'role': 'user', 'content': 'hi'}]], 'completion': [[{'role': 'assistant', 'content': 'yo'}]]}
    """
    ends = [max(i for i, m in enumerate(turns) if m["role"] == "assistant") for turns in batch["messages"]]
    return {"prompt": [turns[:last] for turns, last in zip(batch["messages"], ends)],
            "completion": [turns[last:last + 1] for turns, last in zip(batch["messages"], ends)]}


def masks_assistant_turns(tokenizer: PreTrainedTokenizerBase | None) -> bool:
    """Whether TRL can compute an assistant-only loss mask with this tokenizer's chat template.

    Example:
        >>> masks_assistant_turns(None)
        False
    """
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


def assistant_masks_batch(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase) -> dict[str, list]:
    """A batch of messages rows as token ids with an ``assistant_masks`` column (1 on every assistant
    turn's tokens), for a chat template without ``{% generation %}`` marks: TRL builds its labels from
    that column as it does from its own masks. Each turn is found by rendering the conversation's
    prefixes (:func:`assistant_spans`); the ids are the template's text tokenised as TRL does.

    Example:
        >>> row = assistant_masks_batch({"messages": [[{"role": "user", "content": "hi"},
        ...                                              {"role": "assistant", "content": "yo"}]]}, tok)
        >>> [tok.decode(i) for i, m in zip(row["input_ids"][0], row["assistant_masks"][0]) if m]
        ['y', 'o', '<|end|>']
    """
    ids, masks = [], []
    for turns in batch["messages"]:
        text, spans = assistant_spans(tokenizer, turns)
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids.append(encoded["input_ids"])
        masks.append([int(any(a <= start < b for a, b in spans)) for start, _ in encoded["offset_mapping"]])
    return {"input_ids": ids, "assistant_masks": masks}


class UnmaskableTemplate(ValueError):
    """A chat template whose assistant turns cannot be told apart by rendering a conversation's prefixes."""


def assistant_spans(tokenizer: PreTrainedTokenizerBase, turns: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(the conversation as its chat template renders it, the character span of each assistant turn):
    a turn is what rendering the turns up to it adds to the turns before it with the generation
    prompt. Raises :class:`UnmaskableTemplate` where a render is not the start of the next (the template rewrites
    earlier turns, e.g. drops past reasoning): such a template cannot be masked this way.

    Example:
        >>> assistant_spans(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
        ('<|user|>\\nhi<|end|>\\n<|assistant|>\\nyo<|end|>', [(33, 42)])
    """
    def render(part: list[dict], prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=prompt)

    text, spans = render(turns), []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before, through = render(turns[:i], prompt=True) if i else "", render(turns[:i + 1])
        if not (through.startswith(before) and text.startswith(through)):
            raise UnmaskableTemplate("this chat template rewrites earlier turns as a conversation goes on, so its "
                                     "assistant turns cannot be masked; use train_on last_turn or all")
        spans.append((len(before), len(through)))
    return text, spans
