"""train(): real SFT steps with TRL, a Run that records everything, and stops that lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import lora_nb
from lora_nb.training import Run


@pytest.fixture
def lora_llama(llama):
    model, tok = lora_nb.load(llama)
    return lora_nb.inject(model, r=4, targets="all-linear", verbose=False), tok


def test_run_records_history_and_folder(lora_llama, parity, in_tmp):
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=3, batch_size=4, max_length=64, eval=0.25, eval_steps=1)
    assert run.status == "finished" and run.step == 3 and run.max_steps == 3
    losses = [h for h in run.history if "loss" in h]
    evals = [h for h in run.history if "eval_loss" in h]
    assert [h["step"] for h in losses] == [1, 2, 3] and [h["step"] for h in evals] == [1, 2, 3]
    assert all(h["learning_rate"] >= 0 and h["grad_norm"] > 0 and h["memory_mb"] > 0 for h in losses)
    assert all(h["tokens_per_s"] > 0 for h in losses[1:])
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/tokenizer.json",
                 "recipe.yaml", "metrics.jsonl", "run.json", "loss.png", "train.jsonl"):
        assert (run.dir / name).exists(), name
    assert run.dir.parent.name == "runs"
    reopened = Run.load(run.dir)
    assert reopened.history == run.history and reopened.status == "finished"
    recipe = lora_nb.Recipe.from_yaml(run.dir / "recipe.yaml")
    assert recipe.lora.targets == "all-linear" and recipe.lora.r == 4 and recipe.train.steps == 3
    assert recipe.data.path == str(run.dir / "train.jsonl") and recipe.data.eval == 0.25
    assert "finished" in str(run) and "<img" in run._repr_html_()


def test_qlora_learns_on_cpu(tiny, parity, in_tmp):
    model, tok = lora_nb.load(str(tiny("llama", "demo")), quant="4bit")
    model = lora_nb.inject(model, r=8, verbose=False)
    run = lora_nb.train(model, tok, parity[0], steps=20, lr=2e-3, batch_size=8, max_length=64)
    losses = [h["loss"] for h in run.history if "loss" in h]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3


def test_callbacks_can_stop_a_run(lora_llama, parity, in_tmp):
    from transformers import TrainerCallback

    class StopAtTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            control.should_training_stop = state.global_step >= 2

    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=50, batch_size=4, callbacks=[StopAtTwo()])
    assert run.status == "stopped" and run.step == 2
    assert (run.adapter_dir / "adapter_model.safetensors").exists()


def test_background_run_stops_on_request_and_saves_now(lora_llama, parity, in_tmp):
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=10_000, batch_size=4, background=True, progress=False)
    assert run.running
    run.save_now()
    deadline = time.time() + 120
    while not (run.adapter_dir / "adapter_model.safetensors").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert run.running and (run.adapter_dir / "adapter_model.safetensors").exists()  # saved without stopping
    run.stop()
    run.wait(timeout=120)
    assert not run.running and run.status == "stopped" and 0 < run.step < 10_000
    assert json.loads((run.dir / "run.json").read_text())["status"] == "stopped"
    assert len((run.dir / "metrics.jsonl").read_text().splitlines()) == len(run.history)


def test_second_train_call_reports_bad_settings_before_training(lora_llama, parity):
    model, tok = lora_llama
    with pytest.raises(lora_nb.ConfigError, match=r"train.scheduler.*Did you mean 'cosine'"):
        lora_nb.train(model, tok, parity[0], steps=1, scheduler="cosin")
    with pytest.raises(lora_nb.ConfigError, match="train.batch_size"):
        lora_nb.train(model, tok, parity[0], steps=1, batch_size=0)


def test_ctrl_c_keeps_adapter_and_history(llama, parity, tmp_path):
    """A real SIGINT (what Ctrl-C and a kernel interrupt send) stops at the next step and saves."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    script = textwrap.dedent(f"""
        import lora_nb
        model, tok = lora_nb.load({llama!r})
        model = lora_nb.inject(model, r=4, verbose=False)
        run = lora_nb.train(model, tok, {str(data)!r}, steps=100000, batch_size=4, output_dir={str(tmp_path / 'run')!r})
        print("RETURNED", run.status, run.step, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 180
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 3) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    run = Run.load(tmp_path / "run")
    assert run.status == "interrupted" and run.step >= 3
    assert f"stopped at step {run.step} (interrupted), adapter saved in" in out
    assert f"RETURNED interrupted {run.step}" in out
    assert (run.adapter_dir / "adapter_model.safetensors").exists()
    assert [h["step"] for h in run.history if "loss" in h][-1] >= 3
