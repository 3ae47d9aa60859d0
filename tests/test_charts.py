"""The charts drawn on an Agg canvas: a run's first logged step shows, and an image says which step it shows."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lora_nb.core.charts import Dashboard, Overlay, png_step

BLUE = (31, 119, 180)  # matplotlib's C0: the loss curves


def blue_pixels(png: bytes) -> int:
    with Image.open(io.BytesIO(png)) as image:
        return int((np.asarray(image.convert("RGB")) == BLUE).all(axis=-1).sum())


def test_a_dashboard_shows_the_first_step_as_a_dot_on_an_axis_around_it():
    board = Dashboard("run")
    empty = board.png()
    board.update([{"step": 1, "loss": 2.0, "learning_rate": 1e-4, "grad_norm": 1.0}])
    first = board.png()
    # a line through one point draws nothing: the dot is what shows the run has started
    assert blue_pixels(empty) == 0 and blue_pixels(first) > 10
    assert board.axes[0].get_xlim() == (0.0, 2.0)  # not 0.95 … 1.05
    assert png_step(first) == 1 and png_step(empty) is None
    board.update([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.2}])
    assert board.lines["smoothed"].get_marker() == "None" and board.lines["eval_loss"].get_marker() == "o"
    assert png_step(board.png()) == 3 and board.axes[0].get_xlim()[1] >= 3


def test_an_overlay_shows_a_point_that_has_logged_one_step():
    chart = Overlay("sweep")
    chart.update([("r4", [{"step": 1, "loss": 2.0}])])
    assert blue_pixels(chart.png()) > 10 and chart.ax.get_xlim() == (0.0, 2.0)
    chart.update([("r4", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.8}]), ("r8", [{"step": 1, "loss": 1.9}])])
    assert chart.lines["r4"][1].get_marker() == "None" and chart.lines["r8"][1].get_marker() == "o"
