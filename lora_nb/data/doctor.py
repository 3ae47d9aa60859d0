"""The loss-mask doctor (``lora_nb.data.check``): before training, which tokens of a few examples carry
loss, turn by turn, whether the chat template marks assistant tokens, and what data.train_on makes of it.

The marks come from :func:`lora_nb.data.preview.preview` (TRL's own tokenisation and labels through a
stand-in trainer), so they are the labels training computes its loss on.
"""

from __future__ import annotations

import html
from typing import Any, Optional, Union

from ..core.errors import strict_flags
from ..core.quiet import quietly
from ..recipe.schema import DataSection, build_section
from .columns import apply
from .preview import bracketed, preview
from .prepare import read

FOLD_CHARS = 600  # a row whose text is longer starts folded in a notebook

_SAYS = {  # (format kind, effective train_on, how) -> what training does
    ("messages", "last_turn", "default"): "only the last assistant turn of each conversation is trained (the chat "
    "template has no {% generation %} marks); set data.train_on: assistant to train every assistant turn",
    ("messages", "last_turn", "set"): "only the last assistant turn of each conversation is trained",
    ("messages", "assistant", "marks"): "every assistant turn is trained (TRL's assistant_only_loss, from the chat "
    "template's {% generation %} marks); set data.train_on: last_turn for the last turn only",
    ("messages", "assistant", "rendered"): "every assistant turn is trained (lora_nb masks each turn by rendering the "
    "conversation's prefixes: the chat template has no {% generation %} marks)",
    ("messages", "all", ""): "every token is trained: system and user turns and the template's markup too",
    ("completion", "assistant", ""): "only the completion (the response) is trained; set data.train_on: all to train "
    "the prompt too",
    ("completion", "all", ""): "every token is trained, the prompt too",
    ("text", "all", ""): "every token is trained (text has no prompt to leave out)",
}


class LossReport:
    """Which tokens of each example carry loss, turn by turn, and why: ``[[in double brackets]]`` in
    terminals, highlighted in notebooks (long rows folded).

    Example:
        >>> report = check(tok, [{"prompt": "2+2=", "completion": "4"}])
        >>> report.train_on, report.rows[0]["trained"], report.rows[0]["total"]
        ('assistant', 2, 6)
    """

    @strict_flags
    def __init__(self, fmt: str, marks: Optional[bool], requested: Optional[str], train_on: str,
                 says: str, rows: list[dict]) -> None:
        self.format, self.marks, self.requested, self.train_on, self.says, self.rows = (
            fmt, marks, requested, train_on, says, rows)

    def trained_tokens(self, i: int) -> list[str]:
        """The tokens of example ``i`` that carry loss, in order.

        Example:
            >>> check(tok, [{"prompt": "2+2=", "completion": "4"}]).trained_tokens(0)
            ['4', '<|end|>']
        """
        return [t for _, tokens in self.rows[i]["turns"] for t, loss in tokens if loss]

    def _header(self) -> list[str]:
        marks = {None: "none", True: "marks assistant tokens", False: "no {% generation %} marks"}[self.marks]
        chosen = "default" if self.requested is None else f"set to {self.requested}"
        return [f"format: {self.format} · chat template: {marks} · train_on: {self.train_on} ({chosen})", self.says]

    def __str__(self) -> str:
        lines = [*self._header(), "[[…]] carries loss"]
        for n, row in enumerate(self.rows, 1):
            lines.append(f"--- row {n}: {row['trained']} of {row['total']} tokens trained")
            for role, tokens in row["turns"]:
                lines.append(f"{role}: {bracketed(tokens).rstrip(chr(10))}")  # a trained newline stays: ]] follows
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))  # a terminal or a console without HTML shows the text form

    def _repr_html_(self) -> str:
        head = "<br>".join(html.escape(line) for line in self._header())
        rows = []
        for n, row in enumerate(self.rows, 1):
            long = sum(len(t) for _, tokens in row["turns"] for t, _ in tokens) > FOLD_CHARS
            turns = "".join(f"<tr><td style='vertical-align:top;color:#555;padding-right:6px'>{html.escape(role)}</td>"
                            f"<td><pre style='white-space:pre-wrap;word-break:break-all;margin:0'>{_spans(tokens)}"
                            "</pre></td></tr>" for role, tokens in row["turns"])
            rows.append(f"<details{'' if long else ' open'}><summary>row {n}: {row['trained']} of {row['total']} "
                        f"tokens trained</summary><table style='max-width:100%'>{turns}</table></details>")
        return (f"<div style='max-width:100%'><div>{head}</div><div><span style='background:#c8f7c5'>highlighted"
                f"</span> tokens carry loss</div>{''.join(rows)}</div>")


@quietly()
def check(tokenizer: Any, data: Any, *, rows: int = 3, format: Optional[str] = None, train_on: Optional[str] = None,
          max_length: int = 1024, split: str = "train", columns: Union[dict, str, None] = None) -> LossReport:
    """The first ``rows`` examples of ``data`` with the tokens training computes its loss on marked,
    turn by turn, the counts, whether the chat template marks assistant tokens, and what
    ``train_on`` (data.train_on: None, last_turn, assistant, all) does with them (``columns``:
    data.columns, the data's own column names mapped onto lora_nb's).

    Example:
        >>> print(check(tok, [{"messages": [{"role": "user", "content": "hi"},
        ...                                 {"role": "assistant", "content": "yo"}]}]))  # doctest: +ELLIPSIS
        format: messages · chat template: marks assistant tokens · train_on: assistant (default)
        every assistant turn is trained (TRL's assistant_only_loss, ...
        [[…]] carries loss
        --- row 1: 3 of ... tokens trained
        user: <|user|>
        hi<|end|>
        assistant: <|assistant|>
        [[yo<|end|>]]
    """
    from ..hf.formats import effective_train_on, masks_assistant_turns

    build_section(DataSection, dict(format=format, split=split, train_on=train_on, columns=columns),
                  "data")  # a typo: one line
    head = read(data, split)
    head = apply(head.select(range(min(rows, len(head)))), columns)  # read once: the preview and the turns below
    shown = preview(head, tokenizer, n=rows, format=format, max_length=max_length, train_on=train_on)
    fmt = shown.format
    effective = effective_train_on(fmt, tokenizer, train_on)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    marks = masks_assistant_turns(tokenizer) if has_template else None
    kind = fmt if fmt in ("messages", "text") else "completion"
    how = ""
    if kind == "messages" and effective == "last_turn":
        how = "default" if train_on is None else "set"
    elif kind == "messages" and effective == "assistant":
        how = "marks" if marks else "rendered"
    raw = head.select(range(len(shown.rows))) if fmt == "messages" else None
    reports = []
    for i, tokens in enumerate(shown.rows):
        turns = _turns(tokenizer, raw[i]["messages"], tokens) if raw is not None else [(fmt, tokens)]
        reports.append({"turns": turns, "trained": sum(loss for _, loss in tokens), "total": len(tokens)})
    return LossReport(fmt, marks, train_on, effective, _SAYS[kind, effective, how], reports)


def _turns(tokenizer: Any, messages: list[dict], tokens: list[tuple[str, bool]]) -> list[tuple[str, list]]:
    """``tokens`` split by the turn each starts in: turn k is what rendering turns up to k adds to the
    render of the turns before it. One block ("conversation") where the template's renders are no
    prefixes of each other or the tokens do not spell the rendered text."""
    ends, text = [], "".join(t for t, _ in tokens)
    for k in range(1, len(messages) + 1):
        part = tokenizer.apply_chat_template(messages[:k], tokenize=False)
        if not text.startswith(part[:len(text)]):
            return [("conversation", tokens)]
        ends.append(len(part))
    turns: list[tuple[str, list]] = [(m["role"], []) for m in messages]
    at, k = 0, 0
    for token in tokens:
        while k < len(ends) - 1 and at >= ends[k]:
            k += 1
        turns[k][1].append(token)
        at += len(token[0])
    return [turn for turn in turns if turn[1]]


def _spans(tokens: list[tuple[str, bool]]) -> str:
    style = {True: "background:#c8f7c5;font-weight:bold", False: "color:#888"}
    return "".join(f"<span style='{style[loss]}'>{html.escape(t)}</span>" for t, loss in tokens)
