"""The panel and the live chart, driven through their widgets (the browser test drives them in JupyterLab)."""

from __future__ import annotations

import html
import time
import warnings

import pytest
from transformers import TrainerCallback

import lora_nb
from lora_nb.notebook.live import LiveChart
from lora_nb.notebook.panel import Panel, WidgetView
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
    assert panel.quant.label == "none (bf16/fp32)" and panel.format.label == "auto (from the columns)"
    assert panel.r.options == (1, 2, 4, 8, 16, 32, 64, 128)
    expected = report.lora_params(report.names("attention") + report.names("mlp"), r=panel.r.value)
    assert f"<b>{expected:,}</b> = {100 * expected / report.total_params:.3g}% of the model's {report.total_params:,}" \
        in panel.params.value
    assert "⚠" not in panel.params.value
    assert "memory (attention, mlp, r=16, batch 4 × 1024): training needs about" in panel.params.value
    panel.r.value = 4
    panel.roles.children[1].value = False  # untick mlp
    assert f"<b>{report.lora_params('attention', r=4):,}</b>" in panel.params.value
    memory = lora_nb.estimate(session.model, r=4, targets=["attention"], batch_size=4, max_length=1024)
    assert f"memory (attention, r=4, batch 4 × 1024): {memory.summary()}" in panel.params.value  # follows r and roles
    panel.batch_size.value = 8
    assert "memory (attention, r=4, batch 8 × 1024)" in panel.params.value
    panel.r.value = 32  # k_proj and v_proj are 32 wide in the tiny Llama (grouped-query attention)
    assert ("r=32 is not below the smallest adapted dimension (32 in k_proj): LoRA stops being low-rank"
            in panel.params.value)
    panel.r.value = 128
    assert "(32 in k_proj)" in panel.params.value and "% of the model's 179,648" in panel.params.value


def test_the_share_is_of_the_base_model_when_an_adapter_is_on_it(tiny):
    session = Session()
    session.load(str(tiny("llama", "demo")))
    session.inject(r=16, targets="attention")
    panel = Panel(session)  # as after %lora inject / %lora train: discover() would count the adapter in
    assert "of the model's 179,648" in panel.params.value
    assert panel.tabs.get_title(panel.tabs.selected_index) == "Train"  # a model is loaded: ready to train


def test_train_continue_stop_runs_and_export_from_the_buttons(tiny, demo_data, in_tmp):
    train_path, test_path = demo_data
    panel = Panel(model=str(tiny("llama", "demo")), data=str(train_path))
    assert [panel.tabs.get_title(i) for i in range(len(panel.tabs.children))] == \
        ["Model", "Adapter", "Data", "Train", "Runs", "Export"]
    assert panel.tabs.selected_index == 0  # no model yet: the Model tab
    panel.quant.value = "4bit"
    panel.buttons["Load"].click()
    assert "loaded" in panel.status.value and panel.tabs.selected_index == 1  # the Adapter tab, with the targets
    panel.buttons["Preview"].click()
    assert "carry loss" in panel.sample.value and "background:#c8f7c5" in panel.sample.value
    panel.steps.value, panel.lr.value, panel.batch_size.value, panel.max_length.value = 5000, 2e-3, 8, 64
    panel.eval.value, panel.epochs.value = "0.1", 2
    controls = [panel.buttons["Stop"], panel.buttons["Save now"]]
    assert all(b.disabled for b in controls)  # nothing trains: greyed out
    panel.buttons["Train"].click()
    run = panel.session.active
    assert not any(b.disabled for b in controls)  # training in the background: Stop and Save now work
    # the controls became a recipe, run by lora_nb.run on the loaded base: recorded like any other run
    recipe = lora_nb.Recipe.from_yaml(run.dir / "recipe.yaml")
    assert (recipe.model.quant, recipe.lora.r, recipe.lora.targets, recipe.train.steps, recipe.train.lr) == \
        ("4bit", panel.r.value, ["attention", "mlp"], 5000, 2e-3)
    assert (recipe.data.eval, recipe.train.epochs, recipe.train.eval_steps) == (0.1, 2.0, None)
    wait_for(lambda: run.step >= 3 and panel.chart.value)
    assert "fresh adapter" in panel.status.value and "r=16" in panel.status.value
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
    wait_for(lambda: run.name in panel.runs.value)
    wait_for(lambda: all(b.disabled for b in controls))  # the run has ended: greyed out again

    # continue: the same adapter trains on (r in the controls is ignored), with eval data from a file
    model = panel.session.model
    panel.continue_adapter.value, panel.r.value = True, 8
    panel.steps.value, panel.epochs.value, panel.eval.value, panel.eval_steps.value = 4, 0, str(test_path), 2
    panel.buttons["Train"].click()
    second = panel.session.active
    assert second is not run and f"continuing the adapter of run {run.name}" in panel.status.value
    second.wait()
    assert panel.session.model is model and second.status == "finished" and second.step == 4
    assert second.recipe.lora.r == 16 and second.recipe.data.eval == str(test_path)
    assert [h["step"] for h in second.history if h.get("eval_loss") is not None] == [2, 4]  # the chart's red curve
    wait_for(lambda: "finished" in panel.status.value and second.name in panel.runs.value)
    assert "continuing the adapter of run" in panel.status.value

    panel.prompt.value = "Even or odd?\n\n12"
    panel.buttons["Compare"].click()
    assert "<th>adapter</th>" in panel.result.value
    panel.buttons["Export code"].click()
    assert "SFTConfig" in panel.code.value and "<textarea" in panel.code.value and ">Copy</button>" in panel.code.value
    assert "%lora export --cell" in panel.code.value  # what puts it in a cell: a widget cannot
    panel.buttons["Save to file"].click()
    script = (in_tmp / "train_lora.py").read_text()
    assert "SFTConfig" in script and "wrote train_lora.py" in panel.status.value
    (in_tmp / "train_lora.py").write_text("mine")
    panel.buttons["Save to file"].click()  # never over a file
    assert "file exists" in panel.status.value and (in_tmp / "train_lora.py").read_text() == "mine"
    assert "%lora export FILE --overwrite" in panel.status.value  # the magic's flag, under its one name


def sweep_panel(tiny, folder):
    """A panel on the tiny model, its controls set for short points: 3 steps each, 8 held-out rows scored."""
    from lora_nb.demo import write_data

    train_path, test_path = write_data(folder / "data", train_rows=64, test_rows=8)
    session = Session()
    session.load(str(tiny("llama", "demo")))
    panel = Panel(session, data=str(train_path))
    panel.steps.value, panel.batch_size.value, panel.max_length.value, panel.eval.value = 3, 8, 64, str(test_path)
    return panel


def test_sweep_from_the_panel(tiny, in_tmp):
    panel = sweep_panel(tiny, in_tmp)
    session = panel.session
    assert [v.value for v in panel.sweep_values] == ["4, 8, 16", ""] and panel.sweep_values[1].disabled
    panel.sweep_keys[1].value = "targets"  # suggested: the ticked roles together, then all-linear
    assert panel.sweep_values[1].value == "[attention, mlp], all-linear" and not panel.sweep_values[1].disabled
    panel.sweep_values[0].value, panel.sweep_values[1].value = "4, 8", "attention"
    shown = []
    panel.status.observe(lambda change: shown.append(change["new"]), names="value")
    panel.buttons["Sweep"].click()
    sweep = session.active
    assert isinstance(sweep, lora_nb.Sweep) and [p.label for p in sweep.points] == ["r4-s0", "r8-s0"]
    sweep.wait()
    assert sweep.status == "finished" and [p.status for p in sweep.points] == ["finished", "finished"]
    assert all(p.score is not None for p in sweep.points)  # the eval field's file, scored after each point
    assert all(p.recipe.train.steps == 3 and p.recipe.lora.targets == "attention" for p in sweep.points)
    wait_for(lambda: "best:" in panel.status.value and sweep.points[-1].run.name in panel.runs.value)
    assert any("point 1/2 r4-s0 · running · step" in line for line in shown)  # which point trains, as it trains
    assert "sweep: 2 fresh adapters on the loaded base, varying r × targets" in panel.status.value
    best = sweep.table()[[p.label for p in sweep.points].index(sweep.best.label)]
    assert best["best"] == "★" and "<td>★</td>" in panel.sweep_table.value
    assert "<table class='lora-nb'>" in panel.sweep_table.value and "<th>eval score</th>" in panel.sweep_table.value
    assert panel.chart.value[:4] == b"\x89PNG" and panel.chart.layout.width == "576px"  # the overlay, at its own size
    # the session keeps the points' runs and the base with the last point's adapter, as %lora sweep does
    assert session.runs == [p.run for p in sweep.points] and session.trained_by is sweep.points[-1].run
    assert session.model is sweep.model and session.model.peft_config["default"].r == 8
    assert session.active is sweep and not sweep.running
    panel.prompt.value = "Even or odd?\n\n12"
    panel.buttons["Compare"].click()  # the model is free again: the last point's adapter against the base
    assert "<th>adapter</th>" in panel.result.value


def test_stop_ends_a_sweep_keeping_its_finished_points(tiny, in_tmp):
    panel = sweep_panel(tiny, in_tmp)
    panel.eval.value = ""
    panel.sweep_keys[0].value = "steps"
    panel.sweep_values[0].value = "3, 5000, 4"
    panel.buttons["Sweep"].click()
    sweep = panel.session.active
    second = sweep.points[1]
    wait_for(lambda: second.run is not None and second.run.step >= 2)
    assert "point 2/3 steps5000-s0 · running" in panel.status.value
    panel.buttons["Save now"].click()  # the point in training saves its adapter and trains on
    wait_for(lambda: (second.run.adapter_dir / "adapter_model.safetensors").exists())
    assert second.run.status == "running"
    panel.buttons["Stop"].click()
    sweep.wait()
    assert sweep.status == "stopped" and [p.status for p in sweep.points] == ["finished", "stopped", "pending"]
    assert 2 <= second.run.step < 5000 and (second.run.adapter_dir / "adapter_model.safetensors").exists()
    wait_for(lambda: "stopped, 1/3 points finished" in panel.status.value)
    assert "<td>stopped</td>" in panel.sweep_table.value and "<td>pending</td>" in panel.sweep_table.value
    assert panel.session.runs == [sweep.points[0].run, second.run]


@pytest.mark.parametrize("key, values, error", [
    ("r", "4, eight", "lora.r"),
    ("r", "[4, 8", "r: is not a comma-separated list of values (e.g. 4, 8, 16 or [q_proj, v_proj], all-linear) "
                   "(got '[4, 8')"),
    ("lr", "", "lr: type the values to try"),
    ("r", "8, 8", "r: is listed twice (got 8)"),
    ("targets", "attention, nonsense", "nonsense"),
], ids=["not-a-number", "broken-list", "no-values", "twice", "no-such-target"])
def test_a_bad_sweep_value_trains_nothing(tiny, in_tmp, key, values, error):
    panel = sweep_panel(tiny, in_tmp)
    panel.sweep_keys[0].value = key
    panel.sweep_values[0].value = values
    panel.buttons["Sweep"].click()
    assert error in html.unescape(panel.status.value) and "color:#b00" in panel.status.value, panel.status.value
    assert panel.session.active is None and panel.session.runs == [] and not (in_tmp / "runs").exists()


def test_tables_are_styled_inside_the_panel():
    panel = Panel()
    css = panel.children[0].value
    assert "lora-nb-panel" in panel._dom_classes
    assert ".lora-nb-panel table.lora-nb th, .lora-nb-panel table.lora-nb td {padding: 0.35em 0.7em" in css
    assert "line-height: 1.4" in css  # not the widget's 28 px line: a prompt's newline stays inside its cell


def test_errors_show_in_the_panel(tiny):
    panel = Panel()
    panel.buttons["Train"].click()
    assert "no model loaded yet" in panel.status.value
    panel.model_name.value = "/no/such/model"
    panel.buttons["Load"].click()
    assert "is not a local folder with config.json" in panel.status.value and "color:#b00" in panel.status.value


class Warns(TrainerCallback):
    """Warns from the training thread, as a library or lora_nb code in that thread might."""

    def on_step_end(self, args, state, control, **kw):
        warnings.warn(f"step {state.global_step} looked odd", UserWarning)


def test_warnings_of_the_training_thread_show_in_the_panel(tiny, parity, in_tmp):
    session = Session()
    session.load(str(tiny("llama", "demo")))
    session.inject(r=8)
    panel = Panel(session)
    chart = LiveChart(view=WidgetView(panel))
    run = lora_nb.train(session.model, session.tokenizer, parity[0] * 4, steps=3, batch_size=8, max_length=64,
                        callbacks=[chart, Warns()], progress=False, background=True)
    run.wait()
    assert "UserWarning: step 1 looked odd" in panel.warnings.value and "step 3 looked odd" in panel.warnings.value
    with pytest.warns(UserWarning, match="from the cell"):  # another thread's warnings go where they went
        warnings.warn("from the cell", UserWarning)
    assert "from the cell" not in panel.warnings.value


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
    run = lora_nb.train(model, tok, parity[0] * 4, steps=60, batch_size=8, max_length=64, callbacks=[chart],
                        progress=False)
    pngs = [png for png, _ in view.shown if png]
    assert pngs and pngs[-1][:4] == b"\x89PNG" and (run.dir / "dashboard.png").read_bytes() == pngs[-1]
    assert "finished" in view.shown[-1][1] and "step 60/60" in view.shown[-1][1]
    assert len(view.shown) >= 3 and "ETA" in view.shown[len(view.shown) // 2][1]
    print(f"live chart: {chart.redraws} image redraws, {chart.render_seconds:.2f} s drawing = "
          f"{100 * chart.overhead:.2f}% of the run")
    # Each image waits until the last one's drawing time fits the 2% budget (python -m benchmarks --cases live_chart
    # measures the resulting cost side by side on a long run).
    for (at, cost), (next_at, _) in zip(chart.frames, chart.frames[1:]):
        assert next_at - at >= cost / chart.budget


def test_the_tracker_dropdown_lists_only_installed_trackers(tiny, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("wandb", "trackio") else object() if name == "mlflow"
                        else real(name, *a))
    panel = Panel(model=str(tiny("llama", "demo")), data="train.jsonl")
    installed = ["mlflow"] + (["tensorboard"] if real("tensorboard") or real("tensorboardX") else [])
    assert sorted(panel.tracker.options) == sorted(["none", *installed]) and panel.tracker.value == "none"
    panel.buttons["Load"].click()
    assert panel.recipe().train.report_to is None
    panel.tracker.value = "mlflow"
    assert panel.recipe().train.report_to == "mlflow"
    panel.prefill(lora_nb.Recipe.from_dict({"model": {"name": "m"}, "train": {"report_to": ["trackio", "mlflow"]}}))
    assert panel.tracker.value == "trackio,mlflow" and panel.recipe().train.report_to == ["trackio", "mlflow"]


def test_column_pickers_map_the_datas_own_columns(tiny, parity, in_tmp):
    import json

    data = in_tmp / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": r["input"], "answer": r["output"]}) + "\n" for r in parity[0]))
    session = Session()
    session.load(str(tiny("llama", "demo")))
    panel = Panel(session, data=str(data))
    panel.buttons["Preview"].click()  # no format fits: the pickers show the data's columns, the error the setting
    assert [p.description for p in panel.pickers.children] == ["instruction", "input", "output"]
    assert all(p.options == (("—", ""), ("question", "question"), ("answer", "answer")) for p in panel.pickers.children)
    assert "set data.columns: {instruction: question, output: answer}" in html.unescape(panel.status.value)
    assert panel.sample.value == "" and panel.recipe().data.columns is None  # nothing picked for the user
    instruction, _, output = panel.pickers.children
    instruction.value = "question"
    output.value = "answer"  # each pick shows the preview again
    assert "format: alpaca" in panel.sample.value and "carry loss" in panel.sample.value
    recipe = panel.recipe()
    assert recipe.data.columns == {"instruction": "question", "output": "answer"}
    panel.steps.value, panel.batch_size.value, panel.max_length.value = 2, 8, 64
    panel.buttons["Train"].click()
    run = panel.session.active
    run.wait()
    assert run.status == "finished" and run.recipe.data.columns == {"instruction": "question", "output": "answer"}
    panel.buttons["Export code"].click()
    assert "COLUMNS = {&#x27;instruction&#x27;: &#x27;question&#x27;, &#x27;output&#x27;: &#x27;answer&#x27;}" \
        in panel.code.value
    panel.data.value = "other.jsonl"  # other data: the pickers and the mapping go
    assert panel.pickers.children == () and panel.recipe().data.columns is None
    panel.prefill(run.recipe)  # a run's recipe brings its mapping back with its data
    assert panel.data.value == "other.jsonl" and panel.recipe().data.columns is None
    panel.data.value = ""
    panel.prefill(run.recipe)
    assert panel.recipe().data.columns == {"instruction": "question", "output": "answer"}


def test_early_stopping_from_the_train_tab(tiny, demo_data, in_tmp):
    train_path, test_path = demo_data
    session = Session()
    session.load(str(tiny("llama", "demo")))
    panel = Panel(session, data=str(train_path))
    assert panel.patience.value == 0 and panel.recipe().train.early_stopping is None  # off by default
    panel.steps.value, panel.batch_size.value, panel.max_length.value = 6, 8, 64
    panel.eval.value, panel.eval_steps.value, panel.patience.value = str(test_path), 2, 2
    assert panel.recipe().train.early_stopping == {"patience": 2, "metric": "eval_loss", "min_delta": 0.0}
    panel.buttons["Train"].click()
    run = panel.session.active
    run.wait()
    assert run.recipe.train.early_stopping["patience"] == 2
    best_step = min(((h["step"], h["eval_loss"]) for h in run.history if "eval_loss" in h), key=lambda e: e[1])[0]
    assert run.best["step"] == best_step  # the best eval's adapter is the one kept
    panel.patience.value = 0
    panel.prefill(run.recipe)
    assert panel.patience.value == 2


def test_data_tab_checks_the_loss_mask_with_the_train_on_chosen(tiny, demo_data, in_tmp):
    panel = Panel(model=str(tiny("llama", "demo")), data=str(demo_data[0]))
    panel.buttons["Load"].click()
    panel.buttons["Preview"].click()
    assert "train_on: assistant (default)" in panel.sample.value and "only the completion" in panel.sample.value
    panel.train_on.value = "all"
    panel.buttons["Preview"].click()
    assert "train_on: all (set to all)" in panel.sample.value
    assert panel.recipe().data.train_on == "all"  # what Train and Export code take


class StopsAtTwo(TrainerCallback):
    """Stops the run after a save at step 2, as the Stop button does."""

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 2:
            control.should_training_stop = control.should_save = True


def test_runs_tab_resumes_a_stopped_run_and_loads_a_finished_runs_adapter(tiny, demo_data, in_tmp):
    import re

    from safetensors.torch import load_file

    from lora_nb.runs.record import Run

    base = str(tiny("llama", "demo"))
    recipe = lora_nb.Recipe.from_dict({"model": {"name": base}, "lora": {"r": 4}, "data": {"path": str(demo_data[0])},
                                       "train": {"steps": 4, "batch_size": 8, "max_length": 64}})
    stopped = lora_nb.run(recipe, callbacks=[StopsAtTwo()], progress=False)
    assert Run.load(stopped.dir).status == "stopped"
    panel = Panel()
    panel.tabs.selected_index = 4
    assert panel.run_pick.value == str(stopped.dir) and "(stopped)" in panel.run_pick.label
    assert not panel.buttons["Resume"].disabled and not panel.buttons["Load adapter"].disabled
    panel.buttons["Resume"].click()
    run = panel.session.active
    assert run is not None and run.dir == stopped.dir, panel.status.value
    run.wait()
    assert run.status == "finished" and run.step == 4
    assert [h["step"] for h in Run.load(run.dir).history if "loss" in h] == [1, 2, 3, 4]
    wait_for(lambda: "(finished)" in panel.run_pick.label)
    assert panel.buttons["Resume"].disabled, "a finished run has nothing to resume"
    assert panel.session.model is not None and panel.session.runs[-1] is run

    # a second run's adapter, then the first one's loaded back onto the loaded base
    recipe.train.lr = 1e-2
    other = panel.session.run_recipe(recipe, live=False, on_loaded_base=True, say=None)
    panel.show_runs()
    panel.run_pick.value = str(run.dir)
    panel.buttons["Load adapter"].click()
    assert f"loaded the adapter of {run.name}" in panel.status.value, panel.status.value
    saved = load_file(run.adapter_dir / "adapter_model.safetensors")
    weights = {k: v for k, v in panel.session.model.state_dict().items() if "lora_A" in k}
    assert weights and other.dir != run.dir
    key = next(k for k in saved if "lora_A" in k)
    loaded = next(v for k, v in weights.items() if k.replace(".default", "").endswith(key.split("base_model.", 1)[1]))
    assert (loaded == saved[key]).all()

    # the table fits a notebook column: no cell wider than 24 characters, the full folder in the tooltip
    cells = re.findall(r"<t[dh][^>]*>([^<]*)</t[dh]>", panel.runs.value)
    assert cells and max(len(html.unescape(c)) for c in cells) <= 24, max(cells, key=len)
    assert f"title='{run.dir}'" in panel.runs.value


def test_sweep_points_carry_their_sweeps_name_in_the_runs_table(tmp_path):
    from lora_nb.runs.table import RunTable, short_name
    from lora_nb.runs.record import Run

    point = Run(tmp_path / "sweep-20261128-101500-r4-attention" / "r4-s0")
    assert short_name(point) == "sweep 11-28 10:15/r4-s0"
    assert short_name(Run(tmp_path / "20261128-101500-r16-all-linear-dora-lr1.5e-4-q4")) == "11-28 10:15"
    table = RunTable([point]).compact_html()
    assert ">sweep 11-28 10:15/r4-s0</td>" in table


def test_the_mirror_field_copies_the_run_folder(tiny, demo_data, in_tmp):
    session = Session()
    session.load(str(tiny("llama", "demo")))
    panel = Panel(session, data=str(demo_data[0]))
    assert panel.mirror.value == "" and panel.recipe().train.mirror is None  # off by default
    panel.steps.value, panel.batch_size.value, panel.max_length.value = 2, 8, 64
    panel.mirror.value = f" {in_tmp / 'drive'} "
    panel.buttons["Train"].click()
    run = panel.session.active
    run.wait()
    assert run.status == "finished" and run.mirror == str(in_tmp / "drive")
    assert (in_tmp / "drive" / run.name / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (run.adapter_dir / "adapter_model.safetensors").read_bytes()
    panel.mirror.value = ""
    panel.prefill(run.recipe)
    assert panel.mirror.value == str(in_tmp / "drive")
