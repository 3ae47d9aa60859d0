"""SweepChart in a real IPython shell: one chart overlaying every point as the sweep trains, then the table."""

from __future__ import annotations

import base64
import json

import lora_nb
from lora_nb.notebook.sweep_view import SweepChart
from lora_nb.experiments.sweeps.sweep import sweep


def test_one_chart_grows_with_each_point_and_the_table_follows(shell, llama, parity, tmp_path):
    from IPython.utils.capture import capture_output

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    recipe = lora_nb.Recipe.from_dict({
        "model": {"name": llama}, "lora": {"targets": "attention"}, "data": {"path": str(data)},
        "train": {"steps": 12, "batch_size": 4, "max_length": 64, "lr": 1e-3, "sft": {"save_steps": 100}}})
    chart = SweepChart(every=0.05)

    with capture_output() as shown:
        s = sweep(recipe, r=[2, 4], callbacks=[chart], output_dir=str(tmp_path / "sweep"))

    images = [o.data["image/png"] for o in shown.outputs if "image/png" in o.data]
    html = [o.data["text/html"] for o in shown.outputs if "text/html" in o.data]
    assert images and base64.b64decode(images[-1]) == chart.last_png and chart.last_png[:4] == b"\x89PNG"
    assert sorted(chart._chart.lines) == ["r2-s0", "r4-s0"]  # one chart, a curve per point
    assert [len(line.get_xdata()) for line, _, _ in chart._chart.lines.values()] == [12, 12]
    # the status follows each point while it runs (which steps get a line depends on the machine's pace:
    # a redraw waits `every` seconds), and every step reaches the chart, as the line lengths above say
    assert any("point 2/2 r4-s0 · running · step " in h for h in html)
    assert any("point 1/2 r2-s0: finished" in h for h in html)
    assert "<td>pending</td>" in next(h for h in html if "<table" in h)  # the table of points shows from the start
    assert "sweep " in html[-2] and "(finished, 2/2 points finished)" in html[-2] and "best: r" in html[-2]
    assert "★" in html[-1] and html[-1].count("<td>finished</td>") == 2
    assert "loss=" not in shown.stderr  # no training bar: the chart shows progress (progress=None)
    assert s.status == "finished"
    print(f"sweep chart: {chart.redraws} image redraws, {chart.render_seconds:.2f} s drawing = "
          f"{100 * chart.overhead:.2f}%")
    for (at, cost), (next_at, _) in zip(chart.frames, chart.frames[1:]):
        assert next_at - at >= cost / chart.budget  # each image waits until the last one fits the 2% budget
