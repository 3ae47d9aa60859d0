"""Data under its own column names: ``data.columns`` applied as the rows are read (the same
:func:`lora_nb.hf.columns.map_columns` exported scripts run), its mistakes told in one line, and the
mapping that would fit data whose columns look like a known shape under other names (:func:`suggest`).
"""

from __future__ import annotations

from typing import Any, Optional

from ..core.errors import ConfigError, nearest
from ..hf.columns import column_pairs, map_columns
from ..recipe.fields import column_map

# Column names seen for each side of an example, in the order they are tried.
PROMPTS = ("instruction", "question", "query", "prompt", "input", "context", "source")
ANSWERS = ("output", "answer", "response", "completion", "target", "reply", "solution")
TEXTS = ("body", "content", "document", "passage", "article", "story")
# The prompt-side names that read as a prompt for prompt/completion; the others as an alpaca instruction.
AS_PROMPT = ("prompt", "input", "context", "source")


def apply(rows: Any, columns: Any) -> Any:
    """``rows`` with ``columns`` (``data.columns``: a dict either way round, or ``a:b,c:d``) applied;
    a column the data lacks is a ConfigError listing the columns it has.

    Example:
        >>> from datasets import Dataset
        >>> apply(Dataset.from_list([{"question": "2+2?", "answer": "4"}]), {"questoin": "instruction"})
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: data.columns: 'questoin' is not a column; the data has: question, answer. ...
    """
    columns = column_map(columns)
    if not columns:
        return rows
    try:
        pairs = column_pairs(columns, rows.column_names)
    except ValueError as e:
        raise ConfigError("data.columns", problem=str(e).split(": ", 1)[1]) from None
    for theirs in pairs.values():
        if theirs not in rows.column_names:
            match = nearest(theirs, rows.column_names)
            raise ConfigError("data.columns", problem=f"{theirs!r} is not a column; the data has: "
                              f"{', '.join(rows.column_names)}", hint=repr(match) if match else None)
    return map_columns(rows, pairs)


def suggest(rows: Any) -> Optional[str]:
    """The setting that would read ``rows`` whose columns look like a known shape under other names
    (question/answer, query/response, input/target, ShareGPT conversations, a body of text), in
    recipe and magic form; None when nothing fits. Never applied for the user.

    Example:
        >>> from datasets import Dataset
        >>> print(suggest(Dataset.from_list([{"query": "2+2?", "response": "4"}])))
        set data.columns: {instruction: query, output: response} (%lora train columns=query:instruction,response:output)
    """
    pairs = fitting(rows)
    if not pairs:
        return None
    recipe = ", ".join(f"{ours}: {theirs}" for ours, theirs in pairs.items())
    magic = ",".join(f"{theirs}:{ours}" for ours, theirs in pairs.items())
    return f"set data.columns: {{{recipe}}} (%lora train columns={magic})"


def fitting(rows: Any) -> dict[str, str]:
    """{lora_nb's column: the data's} for the first known shape the columns of ``rows`` fit; {} for none.

    Example:
        >>> from datasets import Dataset
        >>> fitting(Dataset.from_list([{"instruction": "add", "response": "4"}]))
        {'output': 'response'}
    """
    names = rows.column_names
    first = rows[0] if len(rows) else {}
    for name in names:  # a conversation: a list of turns, {role, content} or ShareGPT's {from, value}
        turns = first.get(name)
        if (isinstance(turns, list) and turns and isinstance(turns[0], dict)
                and ({"from", "value"} <= set(turns[0]) or {"role", "content"} <= set(turns[0]))):
            return {"messages": name}
    prompt = next((n for n in PROMPTS if n in names), None)
    answer = next((n for n in ANSWERS if n in names and n != prompt), None)
    if prompt and answer:
        pairs = ({"prompt": prompt, "completion": answer} if prompt in AS_PROMPT
                 else {"instruction": prompt, "output": answer})
        if "instruction" in pairs and "context" in names and "input" not in names:
            pairs["input"] = "context"  # Dolly's instruction / context / response
        return {ours: theirs for ours, theirs in pairs.items() if ours != theirs}
    text = next((n for n in TEXTS if n in names), None)
    return {"text": text} if text else {}
