"""The panel and the live chart, driven through their widgets (the browser test drives them in JupyterLab)."""

from __future__ import annotations

import time

import pytest

import lora_nb
from lora_nb.notebook.live import LiveChart
from lora_nb.notebook.panel import Panel
from lora_nb.notebook.session import Session


def wait_for(condition, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def demo_data(tmp_path):
    from lora_nb.demo import write_data

    return write_data(tmp_path / "data")


def test_parameter_count_follows_r_and_roles(tiny):
    session = Session()
    session.load(str(tiny("llama", "demo")))
    panel = Panel(session)
    report = lora_nb.discover(session.model)
    assert [b.description for b in panel.roles.children] == ["attention", "mlp"]
    expected = report.lora_params(report.names("attention") + report.names("mlp"), r=panel.r.value)
    assert f"<b>{expected:,}</b>" in panel.params.value
    panel.r.value = 4
    panel.roles.children[1].value = False  # untick mlp
    assert f"<b>{report.lora_params('attention', r=4):,}</b>" in panel.params.value


def test_train_stop_and_runs_from_the_buttons(tiny, demo_data, in_tmp):
    train_path, _ = demo_data
    panel = Panel(model=str(tiny("llama", "demo")), data=str(train_path))
    panel.quant.value = "4bit"
    panel.buttons["Load"].click()
    assert "loaded" in panel.status.value
    panel.buttons["Preview"].click()
    assert "carry loss" in panel.result.value and "background:#c8f7c5" in panel.result.value
    panel.steps.value, panel.lr.value, panel.batch_size.value, panel.max_length.value = 5000, 2e-3, 8, 64
    panel.buttons["Train"].click()
    run = panel.session.active
    # the controls became a recipe, run by lora_nb.run on the loaded base: recorded like any other run
    recipe = lora_nb.Recipe.from_yaml(run.dir / "recipe.yaml")
    assert (recipe.model.quant, recipe.lora.r, recipe.lora.targets, recipe.train.steps, recipe.train.lr) == \
        ("4bit", panel.r.value, ["attention", "mlp"], 5000, 2e-3)
    wait_for(lambda: run.step >= 3 and panel.chart.value)
    first = panel.chart.value
    panel.buttons["Train"].click()  # a second run while one trains is refused, in the panel
    assert "still training in the background" in panel.status.value
    wait_for(lambda: "step" in panel.status.value and panel.chart.value != first)
    panel.buttons["Stop"].click()
    run.wait()
    wait_for(lambda: "adapter saved in" in panel.status.value)
    assert run.status == "stopped" and 3 <= run.step < 5000
    assert f"stopped at step {run.step}" in panel.status.value
    assert (run.adapter_dir / "adapter_model.safetensors").exists() and (run.dir / "dashboard.png").exists()
    assert run.name in panel.runs.value
    panel.prompt.value = "Even or odd?\n\n12"
    panel.buttons["Compare"].click()
    assert "<th>adapter</th>" in panel.result.value
    panel.buttons["Export code"].click()
    assert "SFTConfig" in panel.result.value


def test_errors_show_in_the_panel(tiny):
    panel = Panel()
    panel.buttons["Train"].click()
    assert "no model loaded yet" in panel.status.value
    panel.model_name.value = "/no/such/model"
    panel.buttons["Load"].click()
    assert "cannot be loaded" in panel.status.value and "color:#b00" in panel.status.value


class Recorder:
    def __init__(self):
        self.shown = []

    def show(self, png, status):
        self.shown.append((png, status))


def test_live_chart_keeps_to_its_budget(tiny, parity, in_tmp):
    model, tok = lora_nb.load(str(tiny("llama", "demo")))
    model = lora_nb.inject(model, r=8, verbose=False)
    view = Recorder()
    chart = LiveChart(every=0.2, view=view)
    run = lora_nb.train(model, tok, parity[0] * 4, steps=60, batch_size=8, max_length=64, callbacks=[chart], progress=False)
    pngs = [png for png, _ in view.shown if png]
    assert pngs and pngs[-1][:4] == b"\x89PNG" and (run.dir / "dashboard.png").read_bytes() == pngs[-1]
    assert "finished" in view.shown[-1][1] and "step 60/60" in view.shown[-1][1]
    assert len(view.shown) >= 3 and "ETA" in view.shown[len(view.shown) // 2][1]
    print(f"live chart: {chart.redraws} image redraws, {chart.render_seconds:.2f} s drawing = {100 * chart.overhead:.2f}% of the run")
    # Each image waits until the last one's drawing time fits the 2% budget (benchmarks/live_chart.py
    # measures the resulting cost side by side on a long run).
    for (at, cost), (next_at, _) in zip(chart.frames, chart.frames[1:]):
        assert next_at - at >= cost / chart.budget
