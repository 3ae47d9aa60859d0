"""Tables that render as HTML in notebooks and as aligned text in terminals."""

from __future__ import annotations

import html
from typing import Any, Sequence


def fmt(value: Any) -> str:
    """Numbers the way people read them: 1,234,567; 0.0123; 3.2e-05; a float from 10,000 up in whole
    units (a speed of 10,624 tokens/s, not 1.062e+04).

    Example:
        >>> fmt(1234567), fmt(0.012345), fmt(None), fmt(10623.7), fmt(9495.2), fmt(float("inf"))
        ('1,234,567', '0.01235', '', '10,624', '9495', 'inf')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if 1e4 <= abs(value) < float("inf") else f"{value:.4g}"
    return str(value)


def _cell(value: Any) -> str:
    return fmt(value).replace("\n", " ⏎ ")


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """An aligned plain-text table.

    Example:
        >>> print(text_table(["role", "modules"], [["attention", 8]]))
        role       modules
        ---------  -------
        attention        8
    """
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) and rows
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = ([title] if title else []) + [line(headers), "  ".join("-" * w for w in widths)]
    return "\n".join(out + [line(r) for r in cells])


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """An HTML table; every cell is escaped.

    Example:
        >>> "<td>8</td>" in html_table(["modules"], [[8]])
        True
    """
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    caption = f"<caption style='text-align:left;font-weight:bold'>{html.escape(title)}</caption>" if title else ""
    return f"<table class='lora-nb'>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def wrapped_table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int = 100) -> str:
    """An aligned plain-text table of text cells that keeps each row's line breaks inside the row
    and wraps cells so the table fits ``width`` characters (a notebook column); when a row takes
    several lines, a blank line sets the rows apart.

    Example:
        >>> print(wrapped_table(["prompt", "answer"], [["Is 7\\neven?", "odd"]]))
        prompt  answer
        ------  ------
        Is 7    odd
        even?
    """
    import textwrap

    room = max(12, (width - 2 * (len(headers) - 1)) // max(1, len(headers)))

    def lines(text: str) -> list[str]:
        return [part for line in str(text).split("\n") for part in (textwrap.wrap(line, room) or [""])]

    cells = [[lines(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(line) for row in cells for line in row[i]]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    tall = any(len(c) > 1 for row in cells for c in row)
    for n, row in enumerate(cells):
        out += [""] if n and tall else []
        out += [line([c[i] if i < len(c) else "" for c in row]) for i in range(max(len(c) for c in row))]
    return "\n".join(out)
