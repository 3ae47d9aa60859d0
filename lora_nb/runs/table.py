"""Runs side by side: a table of their settings and results, and their loss curves overlaid."""

from __future__ import annotations

import html
import re
from typing import Any, Optional, Sequence

from ..core.errors import strict_flags
from ..core.render import fmt, text_table
from .record import Run


class RunTable:
    """Runs side by side: when they started, their settings, final metrics and eval score, and their
    loss curves overlaid.

    Example:
        >>> from lora_nb.runs.find import find_runs
        >>> print(RunTable(find_runs("runs", limit=10)))  # doctest: +ELLIPSIS
        run          label                status    steps  ...
        -----------  -------------------  --------  -----  ...
        11-28 10:15  r4-attention-lr2e-4  finished      1  ...
        >>> print(RunTable(find_runs("runs", limit=10)).text(every_column=True))  # doctest: +ELLIPSIS
        run              started           label                status    steps  quant  targets    r  alpha  variant ...
        ...
        20261128-101500  ...  r4-attention-lr2e-4  finished      1         attention  4     32  lora     0.0002 ...
    """

    HEADERS = ["run", "started", "label", "status", "steps", "quant", "targets", "r", "alpha", "variant", "lr", "batch",
               "loss", "eval loss", "eval score", "tokens/s", "time"]

    def __init__(self, runs: Sequence[Run]) -> None:
        self.runs = list(runs)

    def rows(self) -> list[list[Any]]:
        out = []
        for run in self.runs:
            r = run.recipe
            lora, train, model = (r.lora, r.train, r.model) if r else (None, None, None)
            targets = None if lora is None else lora.targets
            targets = targets if targets is None or isinstance(targets, str) else ", ".join(targets)
            out.append([run.name, _when(run.started), run.label, run.status, run.step, model.quant if model else None,
                        targets, lora.r if lora else None, lora.alpha if lora else None, lora.variant if lora else None,
                        train.lr if train else None, train.batch_size if train else None,
                        run.last("loss"), run.last("eval_loss"), run.eval_score, run.mean("tokens_per_s"),
                        _duration(run.summary.get("train_runtime"))])
        return out

    COMPACT_HEADERS = ["run", "label", "status", "step", "loss", "eval loss", "score", "time"]

    def compact_html(self, width: int = 24) -> str:
        """The table narrow enough for a notebook column (the panel's Runs tab): a run's name as its
        compact start time (a sweep's point under its sweep's), its label, status and results; no
        cell longer than ``width`` characters, the full folder in the run cell's tooltip.

        Example:
            >>> RunTable([Run("runs/20261128-101500-r4-attention-lr2e-4")]).compact_html().count("<tr>")
            2
        """
        rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in self.COMPACT_HEADERS) + "</tr>"]
        for run, short in zip(self.runs, short_names(self.runs)):
            cells = [short, run.label, run.status, f"{run.step}/{run.max_steps}", run.last("loss"),
                     run.last("eval_loss"), run.eval_score, _duration(run.summary.get("train_runtime"))]
            text = [_clip(fmt(c), width) for c in cells]
            tips = [str(run.dir), run.label] + [""] * (len(cells) - 2)
            rows.append("<tr>" + "".join(_td(t, tip) for t, tip in zip(text, tips)) + "</tr>")
        return f"<table class='lora-nb' style='white-space:nowrap'>{''.join(rows)}</table>"

    @strict_flags
    def figure(self, compact: bool = False):
        """The runs' loss curves in one chart; ``compact``: each named as in :meth:`compact_html`.

        Example:
            >>> RunTable([Run("runs/20261128-101500-r4-attention-lr2e-4")]).figure(compact=True)  # doctest: +SKIP
        """
        from ..core.charts import loss_figure

        names = ([_clip(f"{short} {run.label}".strip(), 40) for run, short in zip(self.runs, short_names(self.runs))]
                 if compact else [run.name for run in self.runs])
        return loss_figure(list(zip(names, (run.history for run in self.runs))), title="loss by run")

    def __str__(self) -> str:
        return self.text()

    @strict_flags
    def text(self, every_column: bool = False) -> str:
        """The table as text, about a page wide as a notebook shows it (:meth:`page`); ``every_column``: each
        run's full folder name, start time and every setting, however wide.

        Example:
            >>> RunTable([]).text()
            'no runs yet'
        """
        if not self.runs:
            return "no runs yet"
        if every_column:
            return text_table(self.HEADERS, self.rows())
        headers, rows = self.page()
        return text_table(headers, [[_clip(fmt(c), 32) if i < 2 else c for i, c in enumerate(row)] for row in rows])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))  # a terminal IPython shows the table, not <RunTable at 0x…>

    RESULTS = ["steps", "loss", "eval loss", "eval score", "tokens/s", "time"]
    SETTINGS = ["quant", "targets", "r", "alpha", "variant", "lr", "batch"]

    def page(self) -> tuple[list[str], list[list[Any]]]:
        """The columns that fit a page, and each run's values in them: a run named by its compact start time,
        its label (which sums its settings up: ``r16-all-linear-lr2e-3``), status, the results any run has,
        then only the settings that differ between the runs.

        Example:
            >>> RunTable([Run("runs/20261128-101500-r4-attention-lr2e-4")]).page()[0]
            ['run', 'label', 'status', 'steps']
        """
        rows = [dict(zip(self.HEADERS, row)) for row in self.rows()]
        headers = (["run", "label", "status"] + [h for h in self.RESULTS if any(row[h] is not None for row in rows)]
                   + [h for h in self.SETTINGS if len({fmt(row[h]) for row in rows}) > 1])
        shorts = short_names(self.runs)
        return headers, [[short] + [row[h] for h in headers[1:]] for short, row in zip(shorts, rows)]

    def _repr_html_(self) -> str:
        """The table as a notebook shows it, :meth:`page`'s columns (a run's folder and start time in its
        tooltip); scrolls inside the cell if still too wide. The loss curves below, named the same way.
        ``text(every_column=True)`` has every column."""
        from ..core.charts import png_img

        if not self.runs:
            return "<p>no runs yet</p>"
        headers, rows = self.page()
        body = []
        for run, row in zip(self.runs, rows):
            started = f" · started {_when(run.started)}" if run.started else ""
            cells = [_td(_clip(row[0], 24), f"{run.dir}{started}"), _td(_clip(fmt(row[1]), 32), run.label)]
            cells += [_td(fmt(c)) for c in row[2:]]
            body.append("<tr>" + "".join(cells) + "</tr>")
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        return (f"<div style='overflow-x:auto'><table class='lora-nb'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table></div>" + png_img(self.figure(compact=True)))


@strict_flags
def short_name(run: Run, seconds: bool = False) -> str:
    """A run's name in a few characters: its start time as ``MM-DD HH:MM`` for a timestamped folder
    (the label is a column of its own), under its sweep's (``sweep 11-28 10:15/r4-s0``) for a sweep's point.

    Example:
        >>> short_name(Run("runs/20261128-101500-r4-attention-lr2e-4")), short_name(Run("runs/mine"))
        ('11-28 10:15', 'mine')
        >>> short_name(Run("runs/sweep-20261128-101500/r4-s0"))
        'sweep 11-28 10:15/r4-s0'
    """
    parent = run.dir.parent.name
    if parent.startswith("sweep-"):
        return f"sweep {_stamp(parent.removeprefix('sweep-'), seconds)}/{run.name}"
    return _stamp(run.name, seconds)


def short_names(runs: Sequence[Run]) -> list[str]:
    """:func:`short_name` of each run, to the second where two of ``runs`` started in the same minute.

    Example:
        >>> short_names([Run("runs/20261128-101500-r4"), Run("runs/20261128-101542-r8"), Run("runs/20261128-1120-x")])
        ['11-28 10:15:00', '11-28 10:15:42', '20261128-1120-x']
    """
    names = [short_name(run) for run in runs]
    return [short_name(run, seconds=True) if names.count(name) > 1 else name for run, name in zip(runs, names)]


def _stamp(name: str, seconds: bool = False) -> str:
    """``20261128-101500-…`` as ``11-28 10:15`` (``seconds``: ``11-28 10:15:00``); any other name as it is."""
    found = re.match(r"\d{4}(\d\d)(\d\d)-(\d\d)(\d\d)(\d\d)(?:-|$)", name)
    if not found:
        return name
    return f"{found[1]}-{found[2]} {found[3]}:{found[4]}" + (f":{found[5]}" if seconds else "")


def _td(text: str, tip: str = "") -> str:
    """A table cell, escaped, with ``tip`` as its tooltip."""
    title = f" title='{html.escape(tip)}'" if tip else ""
    return f"<td{title}>{html.escape(text)}</td>"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _when(started: float) -> Optional[str]:
    """A start time as people read it: 2026-11-28 10:15."""
    from datetime import datetime

    return datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M") if started else None


def _duration(seconds: Optional[float]) -> Optional[str]:
    """A run's length as people read it: 42 s, 3 min 05 s, 2 h 07 min.

    Example:
        >>> _duration(42.4), _duration(185), _duration(7620)
        ('42 s', '3 min 05 s', '2 h 07 min')
    """
    if seconds is None:
        return None
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
