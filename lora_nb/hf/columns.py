"""A dataset's own column names mapped onto lora_nb's (``data.columns``), ShareGPT turns made chat messages.

Shared with exported scripts (:mod:`lora_nb.export.script`): standard library and the HF stack only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from datasets import Dataset


# lora_nb's names of the columns it reads; data.columns maps a dataset's own names onto them.
COLUMN_NAMES = ("text", "instruction", "input", "output", "messages", "prompt", "completion")


# ShareGPT's speakers ("from") as chat roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                  "chatgpt": "assistant", "model": "assistant", "system": "system"}


def column_pairs(columns: dict[str, str], present: Iterable[str]) -> dict[str, str]:
    """{lora_nb's column: the data's column} from a mapping written either way round: in each pair
    the side that is one of :data:`COLUMN_NAMES` is lora_nb's; where both are, the side that is a
    column of the data (``present``) is the data's.

    Example:
        >>> column_pairs({"question": "instruction", "output": "answer"}, ["question", "answer"])
        {'instruction': 'question', 'output': 'answer'}
    """
    present, pairs = set(present), {}
    for a, b in columns.items():
        if a in COLUMN_NAMES and b in COLUMN_NAMES:  # the recipe's order, unless only the key is the data's
            ours, theirs = (b, a) if a in present and b not in present else (a, b)
        elif a in COLUMN_NAMES or b in COLUMN_NAMES:
            ours, theirs = (a, b) if a in COLUMN_NAMES else (b, a)
        else:
            raise ValueError(f"data.columns: {a}: {b} names none of lora_nb's columns ({', '.join(COLUMN_NAMES)})")
        pairs[ours] = theirs
    return pairs


def map_columns(rows: Dataset, columns: dict[str, str]) -> Dataset:
    """``rows`` with the data's columns renamed to lora_nb's (:func:`column_pairs`; a lora_nb-named
    column a pair replaces is dropped), and ShareGPT turns ({from, value}) in ``messages`` made
    {role, content} (:func:`sharegpt_batch`).

    Example:
        >>> from datasets import Dataset
        >>> map_columns(Dataset.from_list([{"q": "2+2?", "a": "4"}]), {"q": "instruction", "a": "output"})[0]
        {'instruction': '2+2?', 'output': '4'}
    """
    pairs = column_pairs(columns, rows.column_names)
    for theirs in pairs.values():
        if theirs not in rows.column_names:
            raise ValueError(f"data.columns: {theirs!r} is not a column; the data has: {', '.join(rows.column_names)}")
    rows = rows.remove_columns([ours for ours, theirs in pairs.items()
                                if ours != theirs and ours in rows.column_names and ours not in pairs.values()])
    rows = rows.rename_columns({theirs: ours for ours, theirs in pairs.items() if ours != theirs})
    turns = next((t for t in rows[:100]["messages"] if t), None) if "messages" in pairs else None
    if turns and {"from", "value"} <= set(turns[0]):
        rows = rows.map(sharegpt_batch, batched=True)
    return rows


def sharegpt_batch(batch: dict[str, list]) -> dict[str, list]:
    """A batch of ShareGPT conversations ({from: human/gpt/system, value}) as chat messages ({role, content}).

    Example:
        >>> sharegpt_batch({"messages": [[{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]]})
        {'messages': [[{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'yo'}]]}
    """
    return {"messages": [[{"role": SHAREGPT_ROLES.get(t["from"], t["from"]), "content": t["value"]} for t in turns]
                         for turns in batch["messages"]]}
