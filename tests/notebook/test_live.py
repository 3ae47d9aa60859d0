"""LiveChart in a real IPython shell and in the panel: the first logged step is drawn at once, the image
follows the status line as closely as its 2% budget allows, and the last step is drawn at the end."""

from __future__ import annotations

import base64
import re
import time

import lora_nb
from lora_nb.core.charts import png_step
from lora_nb.notebook.live import LiveChart
from lora_nb.notebook.panel import Panel


def timeline(outputs) -> list[tuple[int, int | None]]:
    """(the step in the status line, the step in the image shown then) at each status update, from
    IPython's display messages in the order a front end gets them."""
    image, pairs = None, []
    for output in outputs:
        if "image/png" in output.data:
            image = png_step(base64.b64decode(output.data["image/png"]))
        elif "step " in output.data.get("text/html", ""):
            pairs.append((int(re.search(r"step (\d+)/", output.data["text/html"]).group(1)), image))
    return pairs


def train(tiny, parity, chart, steps):
    from IPython.utils.capture import capture_output

    model, tok = lora_nb.load(str(tiny("llama", "demo")))
    model = lora_nb.inject(model, r=8, verbose=False)
    with capture_output() as shown:
        run = lora_nb.train(model, tok, parity[0] * 4, steps=steps, batch_size=8, max_length=64, callbacks=[chart],
                            progress=False)
    return run, timeline(shown.outputs)


def test_without_a_budget_every_logged_step_is_drawn_with_its_status_line(shell, tiny, parity, in_tmp):
    chart = LiveChart(budget=float("inf"))
    run, shown = train(tiny, parity, chart, steps=12)
    assert shown[0] == (0, None)  # the status line from the start; nothing logged to draw yet
    assert all(image == step for step, image in shown[1:]) and {step for step, _ in shown} == set(range(13))
    assert chart.lags == [(0, 0.0)] * len(chart.lags) and chart.redraws >= 12
    assert png_step((run.dir / "dashboard.png").read_bytes()) == 12


def test_the_first_logged_step_is_drawn_at_once_then_as_the_budget_allows(shell, tiny, parity, in_tmp):
    chart = LiveChart(every=0.05)  # a status line at (almost) every step: each gap to the image is seen
    run, shown = train(tiny, parity, chart, steps=24)
    print(f"live chart: {chart.redraws} image redraws, {chart.render_seconds:.2f} s drawing = "
          f"{100 * chart.overhead:.2f}% of the run; behind the status line by up to "
          f"{max(s for s, _ in chart.lags)} steps, {max(s for _, s in chart.lags):.1f} s")
    assert next(pair for pair in shown if pair[0] >= 1) == (1, 1)  # the first step's status comes with its image
    assert all(image is None or image <= step for step, image in shown)
    assert shown[-1] == (24, 24) and png_step((run.dir / "dashboard.png").read_bytes()) == 24  # the end, drawn
    # the chart's own record of how far its image was behind is what the front end was shown
    assert [steps for steps, _ in chart.lags] == [step - image for step, image in shown if image is not None][:-1]
    assert all((seconds > 0) == (steps > 0) for steps, seconds in chart.lags)
    # each image after the first waits until it fits the 2% budget, twice over: all drawing so far, and the last image
    for i, (at, _) in enumerate(chart.frames[1:], 1):
        before, last = sum(cost for _, cost in chart.frames[:i]), chart.frames[i - 1]
        assert before + last[1] <= chart.budget * at and at - last[0] >= last[1] / chart.budget
    assert chart.setup_seconds > 0  # building the figure happened before training, outside every image's wait


def test_the_panel_shows_each_status_line_with_the_image_as_fresh_as_the_budget_allows(tiny, in_tmp):
    from lora_nb.demo import write_data

    train_path, _ = write_data(in_tmp / "data")
    panel = Panel(model=str(tiny("llama", "demo")), data=str(train_path))
    panel.buttons["Load"].click()
    panel.steps.value, panel.batch_size.value, panel.max_length.value = 20, 8, 64
    shown = []

    def record(change):  # in the training thread, as the status widget changes
        found = re.search(r"step (\d+)/", change["new"])
        if found:
            shown.append((int(found.group(1)), png_step(panel.chart.value) if panel.chart.value else None))

    panel.status.observe(record, names="value")
    panel.buttons["Train"].click()
    run = panel.session.active
    run.wait()
    deadline = time.time() + 60
    while "finished" not in panel.status.value:  # the final redraw comes once the run's status is settled
        assert time.time() < deadline
        time.sleep(0.05)
    assert next(pair for pair in shown if pair[0] >= 1) == (1, 1)
    assert all(image is None or image <= step for step, image in shown) and shown[-1] == (20, 20)
