"""The live view of a sweep: one chart overlaying every point's loss as it trains, a status line,
and the table of points, updated in place under the cell that started the sweep.

It works as :mod:`lora_nb.notebook.live` does: IPython display handles (``update_display``, which
every front end honours), the chart drawn at the first logged step and then as often as a 2% time
budget allows, every redraw timed (``SweepChart.overhead``), the figure drawn on an Agg canvas (safe
from a training thread).
A Stop button (ipywidgets) is shown for background sweeps only, when the kernel can handle its click.
"""

from __future__ import annotations

import html
import time
from typing import Any, Optional

from ..core.errors import strict_flags
from ..core.charts import Overlay
from ..core.render import html_table
from .live import BudgetedChart, png_bundle, status_line

SWEEP_TEXT = "(sweep chart)"  # what shows where images do not render


class SweepView:
    """Where a SweepChart draws in a notebook cell: a status line, the chart (PNG) and the table."""

    def __init__(self) -> None:
        from IPython.display import HTML, display

        self.status = display(HTML(""), display_id=True)
        self.image = display(png_bundle(b"", SWEEP_TEXT), raw=True, display_id=True)
        self.table = display(HTML(""), display_id=True)

    def show(self, png: bytes, status: str, table: str) -> None:
        from IPython.display import HTML

        if png:
            self.image.update(png_bundle(png, SWEEP_TEXT), raw=True)
        self.status.update(HTML(status))
        if table:
            self.table.update(HTML(table))


class SweepChart(BudgetedChart):
    """Shows a sweep as it trains: every point's loss in one chart that grows point by point, the
    point in training, and the table of points (the best row marked once there is one). Give it to
    ``lora_nb.sweep(callbacks=[...])``.

    ``every``: seconds after which a logged step updates the status line without a new image; the
    chart is redrawn at each logged step as soon as its drawing time fits ``budget`` (a redraw
    costing 0.08 s waits 4 s). ``controls``: a
    Stop button (for ``background=True`` sweeps). ``view``: where to draw (default: display handles
    under the current cell).

    Example:
        >>> chart = SweepChart()                                                      # doctest: +SKIP
        >>> s = lora_nb.sweep(recipe, r=[4, 8], targets=["attention", "all-linear"],
        ...                   callbacks=[chart])                                          # doctest: +SKIP
        >>> chart.overhead                                                            # doctest: +SKIP
        0.006
    """

    @strict_flags
    def __init__(self, every: float = 1.0, controls: bool = False, view: Any = None, budget: float = 0.02) -> None:
        super().__init__(every, controls, view, budget)
        self.sweep: Any = None
        self._chart: Optional[Overlay] = None

    def begin_sweep(self, sweep: Any) -> None:
        """Called by the sweep before its first point, in the calling cell's thread: show the view there."""
        self.sweep = sweep
        sweep.on_point(lambda s, point: self.redraw(image=self._image_due(), table=True))
        sweep.on_done(lambda s: self.finish())
        self.show()
        self.prepare()
        self.redraw(count=False, table=True)

    def show(self) -> None:
        """Put the Stop button (with ``controls``) and the view under the current cell."""
        from IPython.display import display

        if self.controls and self._buttons is None:
            self._buttons = _stop_button(self)
            if self._buttons is not None:
                display(self._buttons)
        if self.view is None:
            self.view = SweepView()

    def on_train_begin(self, args, state, control, **kw):
        self._started = self._started or time.perf_counter()
        self.redraw(image=self._image_due())

    def finish(self) -> None:
        """The final redraw once the sweep has ended (not counted in :attr:`overhead`)."""
        self._training_seconds = time.perf_counter() - self._started if self._started else 0.0
        self.redraw(count=False, table=True)
        if self._buttons is not None:
            for child in self._buttons.children:
                child.disabled = True

    @strict_flags
    def redraw(self, image: bool = True, count: bool = True, table: bool = False) -> None:
        """Update the view in place: the status line; the chart unless ``image=False``; the table with ``table``."""
        if self.view is None:
            return
        self._timed(image, count, lambda png: self.view.show(png, self._status_html(),
                                                             self._table_html() if table else ""))

    def _build(self) -> None:
        if self._chart is None:
            self._chart = Overlay(self.sweep.dir.name if self.sweep is not None else "")

    def _png(self) -> Optional[bytes]:
        series = self._series()
        if not any(history for _, history in series):
            return None
        self._build()
        self._chart.update(series)
        return self._chart.png()

    def _series(self) -> list[tuple[str, list[dict]]]:
        if self.sweep is None:
            return [(self.run.name, self.run.history)] if self.run is not None else []
        return [(p.label, p.run.history) for p in self.sweep.points if p.run is not None]

    def _status_html(self) -> str:
        s = self.sweep
        if s is None or s.status != "running":
            line = str(s).splitlines()[0] if s is not None else (status_line(self.run) if self.run is not None else "")
            best = s.best if s is not None else None
            found = f"best: {best.label}, adapter in {best.run.adapter_dir}" if best is not None else ""
            return f"<code>{html.escape(line)}</code>" + (f"<br><b>{html.escape(found)}</b>" if found else "")
        number = next((i for i, p in enumerate(s.points, 1) if p.status == "running"), None)
        if number is None or self.run is None:
            done = [(i, p) for i, p in enumerate(s.points, 1) if p.status != "pending"]
            if not done:
                return f"<code>sweep of {len(s.points)} points, starting</code>"
            number, point = done[-1]
            return (f"<code>point {number}/{len(s.points)} {html.escape(point.label)}: "
                    f"{html.escape(point.status)}</code>")
        point = s.points[number - 1]
        hint = " — Stop ends the sweep after this step" if s.running else (
            " — to stop, interrupt the kernel (■ / I,I): finished points and this point's adapter are kept")
        return (f"<code>point {number}/{len(s.points)} {html.escape(point.label)} · "
                f"{html.escape(status_line(self.run))}</code>{html.escape(hint)}")

    def _table_html(self) -> str:
        rows = self.sweep.table() if self.sweep is not None else []
        if not rows:
            return ""
        return html_table(list(rows[0]), [list(row.values()) for row in rows])


def _stop_button(chart: SweepChart):
    """A Stop button wired to the chart's sweep, or None without ipywidgets."""
    try:
        import ipywidgets as w
    except ImportError:
        return None
    stop = w.Button(description="Stop sweep", button_style="danger", icon="stop",
                    tooltip="stop the point in training (its adapter is saved) and end the sweep; "
                            "finished points are kept")
    stop.on_click(lambda _: chart.sweep.stop())
    return w.HBox([stop])
