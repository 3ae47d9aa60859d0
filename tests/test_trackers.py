"""train.report_to: trackio and tensorboard runs on a tiny model write their logs offline, beside lora_nb's own;
a missing tracker is one line before anything loads; the setting under its one name in recipe, API and script."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys

import pytest

import lora_nb
from lora_nb.core.errors import ConfigError
from lora_nb.recipe.schema import Recipe
from lora_nb.runs.history import read_jsonl
from test_export import recipe_for, run_losses, script_losses, without_lora_nb, write_rows

needs = {name: pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"{name} is not installed")
         for name in ("trackio", "tensorboard")}


@pytest.fixture
def trackio_dir(tmp_path, monkeypatch):
    """trackio's local database in tmp_path. trackio reads TRACKIO_DIR when imported, so it is imported afresh."""
    folder = tmp_path / "trackio"
    monkeypatch.setenv("TRACKIO_DIR", str(folder))
    for name in [m for m in sys.modules if m == "trackio" or m.startswith("trackio.")]:
        monkeypatch.delitem(sys.modules, name)
    yield folder
    for name in [m for m in sys.modules if m == "trackio" or m.startswith("trackio.")]:
        del sys.modules[name]  # the next user imports it with their own TRACKIO_DIR


@pytest.fixture
def lora_llama(llama):
    model, tok = lora_nb.load(llama)
    return lora_nb.inject(model, r=4, targets="all-linear", verbose=False), tok


def losses(run):
    return {row["step"]: row["loss"] for row in read_jsonl(run.dir / "metrics.jsonl") if "loss" in row}


def tensorboard_losses(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {s.step: s.value for s in events.Scalars("train/loss")}


@needs["trackio"]
@needs["tensorboard"]
def test_trackio_and_tensorboard_log_the_runs_losses_offline(lora_llama, parity, in_tmp, trackio_dir, capsys):
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=3, batch_size=4, max_length=64, report_to="trackio,tensorboard")
    out = capsys.readouterr()
    assert run.status == "finished" and run.recipe.train.report_to == ["trackio", "tensorboard"]
    mine = losses(run)
    assert sorted(mine) == [1, 2, 3]  # lora_nb's own metrics still fill
    assert f"trackio (project lora_nb, run {run.name}" in out.out
    assert f"tensorboard ({run.dir / 'tensorboard'})" in out.out
    # tensorboard: event files in the run folder, the same losses (float32) at the same steps
    assert glob.glob(str(run.dir / "tensorboard" / "events.out.tfevents.*"))
    assert tensorboard_losses(run.dir / "tensorboard") == pytest.approx(mine, rel=1e-6)
    # trackio: its local database under TRACKIO_DIR, project lora_nb, run named after the run folder
    with sqlite3.connect(trackio_dir / "lora_nb.db") as db:
        rows = [json.loads(m) for name, m in db.execute("select run_name, metrics from metrics") if name == run.name]
    assert {r["train/global_step"]: r["train/loss"] for r in rows if "train/loss" in r} == pytest.approx(mine)
    # trackio's chatter is in the run's log, not the notebook's output; no dashboard was started
    log = (run.dir / "log.txt").read_text()
    assert "Trackio project initialized: lora_nb" in log and "Trackio" not in out.out + out.err


@needs["trackio"]
def test_trackio_starts_no_dashboard_in_a_notebook(lora_llama, parity, in_tmp, trackio_dir, monkeypatch):
    import trackio
    import trackio.utils

    monkeypatch.setattr(trackio.utils, "is_in_notebook", lambda: True)  # where trackio.init would start one
    shown = []
    monkeypatch.setattr(trackio, "show", lambda *a, **k: shown.append(k))  # the dashboard server
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=1, batch_size=4, max_length=64, report_to="trackio")
    assert run.status == "finished" and (trackio_dir / "lora_nb.db").exists()
    assert shown == []


def test_a_missing_tracker_is_one_line_before_anything_loads(llama, in_tmp, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    recipe = Recipe.from_dict({"model": {"name": "no/such-model"}, "data": {"path": "no.jsonl"},
                               "train": {"report_to": "wandb"}})
    with pytest.raises(ConfigError, match=r"^train.report_to: 'wandb' is not installed; pip install wandb.$"):
        lora_nb.run(recipe)  # the model name would fail to load: the tracker is checked first
    assert not os.path.exists("runs")


def test_tensorboard_is_found_through_either_package(monkeypatch):
    from lora_nb.hf.trackers import installed_trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else object() if name == "tensorboardX"
                        else real(name, *a))
    assert "tensorboard" in installed_trackers()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert installed_trackers() == []


@pytest.mark.parametrize("given, kept", [
    (None, None), ("none", None), ("trackio", "trackio"), ("trackio,tensorboard", ["trackio", "tensorboard"]),
    (["wandb", "mlflow"], ["wandb", "mlflow"]), ([], None)])
def test_report_to_in_a_recipe(given, kept):
    recipe = Recipe.from_dict({"model": {"name": "m"}, "train": {"report_to": given}})
    assert recipe.train.report_to == kept
    assert Recipe.from_yaml(recipe.to_yaml()).train.report_to == kept


@pytest.mark.parametrize("given, error", [
    ("all", r"train.report_to: reports to whichever integrations are installed; name the trackers"),
    ("wandbb", r"is not a tracker lora_nb reports to \(got 'wandbb'\).*Did you mean 'wandb'"),
    (3, r"train.report_to: must be")])
def test_report_to_refuses_all_and_unknown_trackers(given, error):
    with pytest.raises(ConfigError, match=error):
        Recipe.from_dict({"model": {"name": "m"}, "train": {"report_to": given}})


def test_report_to_is_one_setting_not_an_sft_extra(lora_llama, parity, in_tmp):
    from lora_nb.training.sft_settings import check_sft_overrides

    with pytest.raises(ConfigError, match=r"^train.sft.report_to: is set by lora_nb from 'report_to'"):
        check_sft_overrides(Recipe.from_dict({"model": {"name": "m"}, "train": {"sft": {"report_to": "x"}}}).train.sft)
    model, tok = lora_llama
    with pytest.raises(ConfigError, match=r"^train.report_to: 'mlflow' is not installed|^train.report_to: 'all'"):
        lora_nb.train(model, tok, parity[0], steps=1, report_to="all" if importlib.util.find_spec("mlflow")
                      else "mlflow")


def test_the_script_carries_report_to(llama, tmp_path):
    recipe = recipe_for(llama, str(tmp_path / "train.jsonl"), str(tmp_path / "run"))
    plain = lora_nb.to_script(recipe)
    assert "'report_to': 'none'" in plain and "tracker" not in plain and "TENSORBOARD" not in plain
    recipe.train.report_to = ["trackio", "tensorboard"]
    script = lora_nb.to_script(recipe)
    assert "'report_to': ['trackio', 'tensorboard']" in script
    assert "def tracker_keywords(" in script and 'os.environ.setdefault("TENSORBOARD_LOGGING_DIR"' in script


@needs["tensorboard"]
def test_a_script_with_tensorboard_logs_the_same_losses(llama, parity, tmp_path):
    data = write_rows(tmp_path / "train.jsonl", parity[0])
    recipe = recipe_for(llama, data, str(tmp_path / "run"), steps=3)
    recipe.train.report_to = "tensorboard"
    run = lora_nb.run(recipe)
    script = tmp_path / "train_lora.py"
    script.write_text(lora_nb.to_script(recipe))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TENSORBOARD_LOGGING_DIR")}
    done = subprocess.run(without_lora_nb(script, "--output-dir", tmp_path / "script"), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert script_losses(tmp_path / "script") == run_losses(run)
    assert tensorboard_losses(tmp_path / "script" / "tensorboard") == pytest.approx(
        tensorboard_losses(run.dir / "tensorboard"))
