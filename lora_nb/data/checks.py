"""Checks that training rows hold what their format needs, before anything is converted or tokenised.

Every text field is a string: a dict, a list, a number or a bool would train as its Python repr.
Chat messages have a role and a content, both strings; prompt and completion are both strings or
both lists of messages (TRL's conversational prompt/completion). Data that leaves nothing to
learn (every output, completion, assistant turn or text empty) is refused; data that mostly does
gets a note. Whole columns are checked in Arrow — a type, a null count, a length per row — not in
a Python loop per row: a million rows take a fraction of a second. Only a column datasets could
not type (its rows mix types) is read value by value, to name the row that breaks it.
"""

from __future__ import annotations

import decimal
import json
import math
import warnings
from typing import Any, Iterator, Optional

from ..core.errors import ConfigError, LoraNbWarning

REQUIRED = {"text": ("text",), "alpaca": ("instruction", "output"), "messages": ("messages",),
            "prompt_completion": ("prompt", "completion")}
TEXT_FIELDS = {"text": ("text",), "alpaca": ("instruction", "input", "output"),
               "prompt_completion": ("prompt", "completion")}
NEEDS = {"text": "a text (a string)", "alpaca": "an instruction and an output, both strings (input is optional)",
         "messages": "messages, each with a role and a content (strings), and an assistant turn",
         "prompt_completion": "a prompt and a completion: both strings, or both lists of messages"}
LEARNED = {"text": "text", "alpaca": "output", "prompt_completion": "completion"}  # the field the loss falls on
MOSTLY_EMPTY = 0.5  # a larger share of rows with nothing to learn is worth a note

Problem = tuple[int, bool, str]  # (0-based row, whether a field is null or missing, what the row has)


def check_columns(columns: list[str], fmt: str) -> None:
    """Refuse data that lacks a column ``fmt`` needs.

    Example:
        >>> check_columns(["text"], "alpaca")
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: data.format: needs columns ['instruction', 'output'] that the data lacks (it has ['text']) (got 'alpaca').
    """  # noqa: E501 - a doctest's expected error, one line
    missing = [c for c in REQUIRED[fmt] if c not in columns]
    if missing:
        raise ConfigError("data.format", fmt, problem=f"needs columns {missing} that the data lacks (it has {columns})")


def check_rows(rows: Any, fmt: str, key: str, source: str) -> None:
    """Refuse the first row whose fields ``fmt`` cannot train on (null, missing, not a string, a
    conversation without an answer), and data that leaves nothing to learn; note data that mostly
    does. ``key`` is the setting an error names, ``source`` the data in words.

    Example:
        >>> from datasets import Dataset
        >>> check_rows(Dataset.from_list([{"text": {"q": "Is 0 even?"}}]), "text", "data", "the rows given")
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: data: row 1 of the rows given has 'text' as a dict ({'q': 'Is 0 even?'}), not a string; every text row needs a text (a string). Fix or drop that row.
    """  # noqa: E501 - a doctest's expected error, one line
    if len(rows) == 0:
        raise ConfigError(key, None, problem=f"{source} has no rows")
    table = rows.with_format("arrow")  # whole columns in Arrow, not a Python loop per row
    columns = {name: _combined(table[name]) for name in REQUIRED[fmt] + TEXT_FIELDS.get(fmt, ())
               if name in rows.column_names}
    problems: list[Problem] = []
    written = None
    for name in [n for n in columns if _has_json(columns[n].type)]:
        written = _written(source, len(rows)) if written is None else written
        python = [row.get(name) for row in written] if written else list(rows.with_format(None)[name])
        columns[name], found = _typed(columns[name], name, python)
        problems += found
    empty = None
    if not problems:
        problems, empty = _problems(columns, fmt)
    if problems:
        raise ConfigError(key, None, problem=_row_problem(problems, fmt, source))
    if empty is not None:
        _check_learnable(empty, fmt, key, source)


def _problems(columns: dict[str, Any], fmt: str) -> tuple[list[Problem], Any]:
    """(problems, per row whether it has nothing to learn) of the columns ``fmt`` reads."""
    if fmt == "messages":
        return _conversations(columns["messages"], "messages", answered=True)
    if fmt == "prompt_completion" and any(map(_holds_messages, columns.values())):
        return _conversational_pair(columns["prompt"], columns["completion"])
    problems, empty = [], None
    for name, values in columns.items():
        strings, found = _texts(values, name, required=name in REQUIRED[fmt])
        problems += found
        if name == LEARNED[fmt] and strings is not None:
            empty = _blank(strings)
    return problems, empty


def check_fraction(fraction: Any, n: int) -> None:
    """Refuse an eval fraction that is no number between 0 and 1, or that leaves no rows to train
    on (datasets rounds the eval rows up, so any fraction above 0 holds out at least one).

    Example:
        >>> check_fraction(0, 10)
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: data.eval: a fraction must be between 0 and 1; leave eval out for no eval rows (got 0).
    """  # noqa: E501 - a doctest's expected error, one line
    if isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ConfigError("data.eval", fraction,
                          problem="a fraction must be between 0 and 1; leave eval out for no eval rows")
    held = math.ceil(fraction * n)
    if held >= n:
        most = math.floor(100 * (n - 1) / n) / 100
        fix = (f"with {n} rows use a fraction of at most {most}, or an eval file" if most > 0
               else "give more rows, or an eval file")
        raise ConfigError("data.eval", fraction,
                          problem=f"holds out every row ({held} of {n}), leaving none to train on; {fix}")


def holds_messages(rows: Any, column: str) -> bool:
    """Whether ``column`` of ``rows`` holds lists of chat messages (conversational prompt/completion).

    Example:
        >>> from datasets import Dataset
        >>> holds_messages(Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}]}]), "prompt")
        True
    """
    return column in rows.column_names and _holds_messages(_combined(rows.with_format("arrow")[column]))


def mixed_row(rows: list[dict], source: str) -> Optional[str]:
    """Why Arrow cannot make one table of ``rows``: the first row whose value somewhere has another
    type than earlier rows have there (a text field that is no string is named as such); None if
    every place holds one type.

    Example:
        >>> mixed_row([{"text": "a"}, {"text": {"q": 1}}], "the rows given")
        "row 2 of the rows given has 'text' as a dict ({'q': 1}), not a string"
    """
    found = _first_mixed(rows)
    return f"row {found[0] + 1} of {source} has {found[1]}" if found else None


def _first_mixed(rows: list[Any]) -> Optional[tuple[int, str]]:
    """(row, what) of :func:`mixed_row`."""
    first: dict[str, dict[str, int]] = {}  # path -> {kind: first row with it}
    for i, row in enumerate(rows):
        for path, value in _leaves(row):
            kinds = first.setdefault(path, {})
            kinds.setdefault(_shape(value, path), i)
            if len(kinds) > 1:
                return _mixture(rows, path, kinds)
    return None


def _mixture(rows: list[Any], path: str, kinds: dict[str, int]) -> tuple[int, str]:
    """(row, what) for a field holding two kinds of value: the row whose kind the field must not
    hold where one is allowed and the other not (a text that is no string), else the later row."""
    *parents, field = path.replace("[]", "").split(".")
    allowed = _ALLOWED.get(field, set(kinds))
    wrong = [k for k in kinds if k not in allowed]
    bad = wrong[0] if len(wrong) == 1 else max(kinds, key=kinds.get)
    row = kinds[bad]
    value = next(v for p, v in _leaves(rows[row]) if p == path and _shape(v, path) == bad)
    where = f"a message with {field!r}" if parents else repr(field)
    if len(wrong) == 1:
        return row, (f"{where} as {bad} ({_short(value)}), "
                     f"not {'a list of messages' if field == 'messages' else 'a string'}")
    other = next(k for k in kinds if k != bad)
    return row, (f"{where} as {bad} ({_short(value)}) where row {kinds[other] + 1} has {other}; "
                 "a field holds one type in every row")


_ALLOWED = {"messages": {"a list of messages"}, "prompt": {"a string", "a list of messages"},
            "completion": {"a string", "a list of messages"},
            **{name: {"a string"} for name in ("text", "instruction", "input", "output", "role", "content")}}


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every non-null value in a row: ``messages[].content`` for a message's content."""
    if isinstance(value, dict):
        for name, item in value.items():
            if item is not None:
                inner = f"{path}.{name}" if path else name
                yield inner, item
                yield from _leaves(item, inner)
    elif isinstance(value, list):
        for item in value:
            if item is not None:
                yield f"{path}[]", item
                yield from _leaves(item, f"{path}[]")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, (int, float, decimal.Decimal)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a dict"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _shape(value: Any, path: str) -> str:
    """:func:`_kind`, telling a list of messages (dicts) from other lists where conversations go."""
    conversation = path in ("messages", "prompt", "completion") and value and _is_conversation(value)
    return "a list of messages" if conversation else _kind(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _combined(column: Any) -> Any:
    import pyarrow as pa

    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return values.dictionary_decode() if pa.types.is_dictionary(values.type) else values


def _is_json(values: Any) -> bool:
    """datasets' Json type: a column whose rows mix types, each value kept as JSON text."""
    import pyarrow as pa

    return isinstance(values.type, pa.BaseExtensionType) and pa.types.is_string(values.type.storage_type)


def _texts(values: Any, name: str, *, required: bool) -> tuple[Any, list[Problem]]:
    """(the values as Arrow strings or None, problems): the first value that is no string, and the
    first null when the field is ``required``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    strings, problems = values, []
    kind = values.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        i = pc.index(pc.is_valid(values), True).as_py()
        if i >= 0:
            value = values[i].as_py()
            return None, [(i, False, f"{name!r} as {_kind(value)} ({_short(value)}), not a string")]
        strings = pa.nulls(len(values), pa.string())
    if required and strings.null_count:
        problems.append((pc.index(pc.is_null(strings), True).as_py(), True, f"no {name!r}"))
    return strings, problems


def _blank(strings: Any) -> Any:
    """Per row: whether the text is null, empty or only whitespace."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(strings)), 0), True)


def _holds_messages(values: Any) -> bool:
    import pyarrow as pa

    kind = values.type
    return ((pa.types.is_list(kind) or pa.types.is_large_list(kind))
            and (pa.types.is_struct(kind.value_type) or pa.types.is_null(kind.value_type)))  # null: only empty lists


def _conversations(values: Any, name: str, *, answered: bool) -> tuple[list[Problem], Any]:
    """(problems, per row whether it has nothing to learn) of a column of conversations: a list of
    messages with string roles and contents; with ``answered``, an assistant turn, else at least
    one message. What is learned: the assistant turns (``answered``), else every message."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not _holds_messages(values):
        i = pc.index(pc.is_valid(values), True).as_py()
        if i >= 0:
            value = values[i].as_py()
            return [(i, False, f"{name!r} as {_kind(value)} ({_short(value)}), not a list of messages")], None
    problems: list[Problem] = []
    if values.null_count:
        problems.append((pc.index(pc.is_null(values), True).as_py(), True, f"no {name!r}"))
    if not _holds_messages(values):
        return problems, None
    turns, parents = pc.list_flatten(values), pc.list_parent_indices(values)
    fields = {}
    for field in ("role", "content"):
        if not pa.types.is_struct(values.type.value_type) or values.type.value_type.get_field_index(field) < 0:
            if len(turns):  # no message anywhere has it
                problems.append((parents[0].as_py(), True, f"a message with no {field!r}"))
            fields[field] = pa.nulls(len(turns), pa.string())
            continue
        strings, found = _texts(pc.struct_field(turns, field), field, required=True)
        problems += [(parents[j].as_py(), missing,
                      f"a message with no {field!r}" if missing else f"a message with {what}")
                     for j, missing, what in found]
        fields[field] = strings
    counts = pc.list_value_length(values)
    if not answered and pc.any(pc.equal(counts, 0)).as_py():
        problems.append((pc.index(pc.equal(counts, 0), True).as_py(), False,
                         f"no messages in {name!r} (an empty list)"))
    if problems:
        return problems, None
    rows = pa.array(range(len(values)))
    said = pc.invert(_blank(fields["content"]))
    if answered:
        learned = pc.equal(fields["role"], "assistant")
        unanswered = pc.and_(pc.invert(pc.is_in(rows, value_set=pc.filter(parents, learned))), pc.is_valid(values))
        if pc.any(unanswered).as_py():
            return [(pc.index(unanswered, True).as_py(), False, "no 'assistant' turn")], None
        said = pc.and_(said, learned)
    return [], pc.invert(pc.is_in(rows, value_set=pc.filter(parents, said)))


def _typed(values: Any, name: str, python: list[Any]) -> tuple[Any, list[Problem]]:
    """A column that datasets keeps as JSON text (its rows mix types: a dict among strings, a
    message without content among full ones) as a typed Arrow array of what is checked here (a
    conversation's roles and contents), or the row whose value no one type holds. ``python``:
    the column's values, as the file has them where there is one (datasets' JSON text would
    have made the string "12" the number 12)."""
    import pyarrow as pa

    if name in ("messages", "prompt", "completion"):
        python = [[{"role": m.get("role"), "content": m.get("content")} for m in v] if v and _is_conversation(v) else v
                  for v in python]
    try:
        return pa.array(python), []
    except (pa.ArrowException, ValueError, TypeError, OverflowError):  # no one Arrow type holds them all
        row, what = _first_mixed([{name: v} for v in python]) or (0, f"{name!r} in a form Arrow cannot read")
        return values, [(row, False, what)]


def _written(source: str, n: int) -> Optional[list[dict]]:
    """The ``n`` rows of a JSON data file ``source`` as written; None for any other source."""
    import os

    if not (source.lower().endswith((".json", ".jsonl")) and os.path.isfile(source)):
        return None
    with open(source, encoding="utf-8-sig") as f:
        text = f.read()
    try:
        rows = (json.loads(text) if text.lstrip().startswith("[")
                else [json.loads(line) for line in text.splitlines() if line.strip()])
    except ValueError:
        return None
    return rows if len(rows) == n and all(isinstance(r, dict) for r in rows) else None


def _has_json(kind: Any) -> bool:
    """Whether an Arrow type holds datasets' Json anywhere (a column whose values mix types)."""
    import pyarrow as pa

    if isinstance(kind, pa.BaseExtensionType):
        return pa.types.is_string(kind.storage_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _has_json(kind.value_type)
    return pa.types.is_struct(kind) and any(_has_json(kind.field(i).type) for i in range(kind.num_fields))


def _is_conversation(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def _conversational_pair(prompt: Any, completion: Any) -> tuple[list[Problem], Any]:
    """Conversational prompt/completion: both columns lists of messages (TRL renders both with the chat template)."""
    import pyarrow.compute as pc

    if _holds_messages(prompt) != _holds_messages(completion):
        text, turns = ("prompt", "completion") if _holds_messages(completion) else ("completion", "prompt")
        both = pc.and_(pc.is_valid(prompt), pc.is_valid(completion))
        row = max(0, pc.index(both, True).as_py())
        return [(row, False, f"{text!r} as {_kind((prompt if text == 'prompt' else completion)[row].as_py())} and "
                             f"{turns!r} as a list of messages")], None
    asked, _ = _conversations(prompt, "prompt", answered=False)
    problems, empty = _conversations(completion, "completion", answered=False)
    return asked + problems, (empty if not asked else None)


def _row_problem(problems: list[Problem], fmt: str, source: str) -> str:
    row = min(r for r, _, _ in problems)
    missing = [what for r, gone, what in problems if r == row and gone]
    wrong = [what for r, gone, what in problems if r == row and not gone]
    parts = ([" and ".join(missing) + " (null or missing)"] if missing else []) + wrong
    return (f"row {row + 1} of {source} has {'; and '.join(parts)}; every {fmt} row needs {NEEDS[fmt]}. "
            "Fix or drop that row" + (" (rows of another format lack these fields too)" if missing else ""))


def _check_learnable(empty: Any, fmt: str, key: str, source: str) -> None:
    """Refuse rows that all have nothing to learn (an empty answer trains only the end token); note when most do."""
    import pyarrow.compute as pc

    n, blank = len(empty), pc.sum(empty).as_py() or 0
    what = f"an empty {LEARNED[fmt]!r}" if fmt in LEARNED else "only empty assistant turns"
    if blank == n:
        raise ConfigError(key, None, problem=f"every row of {source} has {what} ({n} of {n}): there is nothing to "
                                             "learn (an empty answer trains only the end-of-turn token); fill them in")
    if blank / n > MOSTLY_EMPTY:
        warnings.warn(f"{blank} of {n} rows of {source} ({blank / n:.0%}) have {what}: they teach only the "
                      "end-of-turn token", LoraNbWarning, stacklevel=3)
