"""train(): real SFT steps with TRL, a Run that records everything, and stops that lose nothing."""

from __future__ import annotations

import json
from pathlib import Path
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import lora_nb
from killing import kill_once_saved
from lora_nb.runs.record import Run


@pytest.fixture
def lora_llama(llama):
    model, tok = lora_nb.load(llama)
    return lora_nb.inject(model, r=4, targets="all-linear", verbose=False), tok


def test_run_records_history_and_folder(lora_llama, parity, in_tmp):
    model, tok = lora_llama
    assert model.config.use_cache is True
    run = lora_nb.train(model, tok, parity[0], steps=3, batch_size=4, max_length=64, eval=0.25, eval_steps=1)
    assert run.status == "finished" and run.step == 3 and run.max_steps == 3
    assert model.config.use_cache is True, "generating after training (and a merged model) keeps its KV cache"
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


# --- nothing the user made is overwritten -----------------------------------------------------

def test_a_taken_output_dir_is_refused_and_the_first_run_kept(lora_llama, parity, tmp_path):
    model, tok = lora_llama
    out = str(tmp_path / "run")
    first = lora_nb.train(model, tok, parity[0], steps=3, batch_size=4, output_dir=out, progress=False)
    before = {p.name: p.read_bytes() for p in first.dir.iterdir() if p.is_file()}
    with pytest.raises(lora_nb.ConfigError, match=r"output_dir.*not empty.*overwrite=True"):
        lora_nb.train(model, tok, parity[0], steps=2, batch_size=4, output_dir=out, progress=False)
    assert {p.name: p.read_bytes() for p in first.dir.iterdir() if p.is_file()} == before
    again = lora_nb.train(model, tok, parity[0], steps=2, batch_size=4, output_dir=out, progress=False, overwrite=True)
    assert [h["step"] for h in Run.load(again.dir).history] == [1, 2]  # replaced, not appended to
    assert sorted(p.name for p in (again.dir / "checkpoints").iterdir() if p.name.startswith("checkpoint-")) == \
        ["checkpoint-2"]  # the old run's checkpoints are gone; a run keeps its last


def test_a_folder_with_the_users_files_is_refused(lora_llama, parity, tmp_path):
    model, tok = lora_llama
    mine = tmp_path / "train.jsonl"
    mine.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    before = mine.read_bytes()
    with pytest.raises(lora_nb.ConfigError, match=str(tmp_path)):
        lora_nb.train(model, tok, parity[0], steps=1, output_dir=str(tmp_path), progress=False)
    assert mine.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_bad_sft_settings_are_refused_before_anything_is_written(lora_llama, parity, tmp_path):
    model, tok = lora_llama
    out = tmp_path / "run"
    cases = [(dict(weight_decya=0.1),
              r"train.sft.weight_decya: is not an SFTConfig setting.*Did you mean 'weight_decay'"),
             (dict(evaluation_strategy="steps"), r"evaluation_strategy: was renamed: use eval_strategy"),
             # learning_rate=, max_steps= ... are lora_nb's lr=, steps= (tests/test_pipeline.py); close to one:
             (dict(max_step=1), r"train.sft.max_step: is not an SFTConfig setting.*Did you mean 'train.steps'"),
             (dict(learning_rate=1e-3, lr=2e-3), r"^lr: given twice, as learning_rate=0.001 and lr=0.002: keep one"),
             (dict(padding_free=True), r"train.sft.padding_free.*Set packing=true instead"),
             # a wrong type fails before anything is written, not at the first step
             (dict(weight_decay="heavy"), r"^train.sft.weight_decay: must be a number \(got 'heavy'\)"),
             (dict(bf16="false"), r"^train.sft.bf16: must be true or false or null"),
             (dict(optim=3), r"^train.sft.optim: must be"),
             (dict(optim="adamw_turbo"), r"^train.sft: SFTConfig refuses these settings: .*adamw_turbo"),
             (dict(save_steps=-1), r"^train.sft.save_steps: must be a positive number of steps"),
             (dict(save_steps=0), r"^train.sft.save_steps: must be a positive number of steps")]
    for overrides, message in cases:
        with pytest.raises(lora_nb.ConfigError, match=message):
            lora_nb.train(model, tok, parity[0], steps=1, output_dir=str(out), progress=False, **overrides)
        assert not out.exists()


def test_gradient_checkpointing_is_on_only_when_a_step_would_not_fit(lora_llama, parity, in_tmp, monkeypatch, capsys):
    from lora_nb.hf import memory_model

    model, tok = lora_llama
    roomy = lora_nb.train(model, tok, parity[0], steps=1, batch_size=4, progress=False)
    assert json.loads((roomy.dir / "run.json").read_text())["gradient_checkpointing"] is False
    assert not model.base_model.model.is_gradient_checkpointing

    monkeypatch.setattr(memory_model, "free_memory", lambda device=None: 2**20)  # 1 MiB free: nothing fits
    tight = lora_nb.train(model, tok, parity[0], steps=1, batch_size=4, progress=False)
    assert json.loads((tight.dir / "run.json").read_text())["gradient_checkpointing"] is True
    assert model.base_model.model.is_gradient_checkpointing
    assert "gradient checkpointing on: a step without it needs about" in capsys.readouterr().out
    model.base_model.model.gradient_checkpointing_disable()


def test_bf16_trains_on_a_cpu(tiny, parity, in_tmp):
    model, tok = lora_nb.load(str(tiny("llama")), dtype="bf16")
    run = lora_nb.train(lora_nb.inject(model, r=4), tok, parity[0], steps=2, batch_size=4, progress=False)
    assert run.status == "finished" and run.last("loss") is not None


def test_an_explicit_precision_setting_wins_over_lora_nbs_choice(lora_llama, parity, in_tmp):
    model, tok = lora_llama  # lora_nb passes bf16/fp16 itself: before, this was "multiple values for bf16"
    run = lora_nb.train(model, tok, parity[0], steps=1, batch_size=4, bf16=False, fp16=False, progress=False)
    assert run.status == "finished"


def test_a_call_that_cannot_start_leaves_no_folder(lora_llama, parity, tmp_path):
    model, tok = lora_llama
    out = tmp_path / "run"
    with pytest.raises(lora_nb.ConfigError, match=r"train.max_length.*raise max_length"):
        lora_nb.train(model, tok, parity[0], steps=1, max_length=1, output_dir=str(out), progress=False)
    assert not out.exists()


def test_train_before_inject_names_the_fix(llama, parity, tmp_path):
    model, tok = lora_nb.load(llama)
    with pytest.raises(lora_nb.ConfigError, match=r"has no adapter to train: call lora_nb.inject"):
        lora_nb.train(model, tok, parity[0], steps=1, output_dir=str(tmp_path / "run"))


# --- crash-safe runs and resume ---------------------------------------------------------------

def recording_saves(steps):
    """A TrainerCallback appending to ``steps`` the step of each checkpoint saved."""
    from transformers import TrainerCallback

    class Recorded(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            steps.append(state.global_step)

    return Recorded()


def test_checkpoints_every_tenth_of_the_run_and_bounded(lora_llama, parity, in_tmp, monkeypatch):
    import lora_nb.training.callbacks

    monkeypatch.setattr(lora_nb.training.callbacks, "SAVE_GAP_S", 0.0)  # a slow run: every step is "later"
    saves = []
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=20, batch_size=4, callbacks=[recording_saves(saves)],
                        progress=False)
    assert saves == list(range(2, 21, 2))
    kept = sorted(p.name for p in (run.dir / "checkpoints").iterdir() if p.name.startswith("checkpoint-"))
    assert kept == ["checkpoint-20"]  # what resuming needs, no more
    assert json.loads((run.dir / "run.json").read_text())["saved_step"] == 20
    # the last checkpoint's adapter is the run's adapter file, stored once
    assert (run.dir / "checkpoints/checkpoint-20/adapter_model.safetensors").samefile(
        run.adapter_dir / "adapter_model.safetensors")


def test_a_short_run_saves_at_its_end_not_every_tenth(lora_llama, parity, in_tmp):
    saves = []
    model, tok = lora_llama
    started = time.time()
    run = lora_nb.train(model, tok, parity[0], steps=20, batch_size=4, callbacks=[recording_saves(saves)],
                        progress=False)
    if time.time() - started > 25:  # a machine this slow reaches the 30 s gap, and saves in between
        pytest.skip("the run took longer than the gap between saves")
    assert saves == [20] and run.saved_step == 20


def test_a_chosen_save_cadence_is_kept_however_short_the_run(lora_llama, parity, in_tmp):
    saves = []
    model, tok = lora_llama
    lora_nb.train(model, tok, parity[0], steps=6, batch_size=4, save_steps=2, callbacks=[recording_saves(saves)],
                  progress=False)
    assert saves == [2, 4, 6]


def test_a_finished_run_keeps_enough_to_train_on(lora_llama, parity, in_tmp):
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=4, batch_size=4, progress=False)
    more = lora_nb.train(model, tok, parity[0], steps=6, batch_size=4, resume=str(run.dir), progress=False)

    assert more.status == "finished" and more.step == 6
    assert [row["step"] for row in more.history if "loss" in row] == [1, 2, 3, 4, 5, 6]
    elapsed = [row["elapsed"] for row in more.history]  # the clock goes on from the first call's time
    assert elapsed == sorted(elapsed) and more.summary["train_runtime"] >= elapsed[-1]
    assert sorted(p.name for p in (run.dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-6"]


def test_a_checkpoint_at_least_every_two_minutes(lora_llama, parity, in_tmp, monkeypatch):
    from transformers import TrainerCallback

    import lora_nb.training.callbacks

    saves = []

    class Saves(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            saves.append(state.global_step)

    monkeypatch.setattr(lora_nb.training.callbacks, "SAVE_EVERY_S", 0.0)  # every step is "two minutes later"
    model, tok = lora_llama
    lora_nb.train(model, tok, parity[0], steps=25, batch_size=4, callbacks=[Saves()], progress=False)
    assert saves == list(range(1, 26))


def losses_by_step(history):
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def test_a_killed_run_reports_its_last_save_and_resumes_with_the_same_losses(llama, parity, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    # a checkpoint every 4 steps, however fast the run (lora_nb's own cadence spaces them 30 s apart)
    settings = dict(steps=40, batch_size=4, max_length=64, lr=1e-3, save_steps=4, progress=False)
    script = textwrap.dedent(f"""
        import lora_nb
        model, tok = lora_nb.load({llama!r})
        model = lora_nb.inject(model, r=4, verbose=False)
        lora_nb.train(model, tok, {str(data)!r}, output_dir={str(tmp_path / 'run')!r}, **{settings!r})
    """)
    kill_once_saved(script, tmp_path / "run" / "run.json")

    killed = Run.load(tmp_path / "run")
    assert killed.status == "killed" and 8 <= killed.saved_step < 40, (killed.status, killed.saved_step)
    assert "resume=" in killed.message and (killed.adapter_dir / "adapter_model.safetensors").exists()

    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    resumed = lora_nb.train(model, tok, str(data), resume=str(tmp_path / "run"), **settings)
    assert resumed.status == "finished" and resumed.step == 40
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    straight = lora_nb.train(model, tok, str(data), output_dir=str(tmp_path / "straight"), **settings)
    got, expected = losses_by_step(Run.load(resumed.dir).history), losses_by_step(straight.history)
    assert sorted(got) == list(range(1, 41))  # no step lost or doubled in metrics.jsonl
    after = [s for s in expected if s > killed.saved_step]
    assert [got[s] for s in after] == pytest.approx([expected[s] for s in after], rel=1e-5)


def test_resume_needs_a_checkpoint(lora_llama, parity, tmp_path):
    model, tok = lora_llama
    with pytest.raises(lora_nb.ConfigError, match=r"train.resume.*no complete checkpoint"):
        lora_nb.train(model, tok, parity[0], steps=2, resume=str(tmp_path))


def test_torn_files_do_not_stop_a_run_from_loading(lora_llama, parity, in_tmp):
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=3, batch_size=4, progress=False)
    with open(run.dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # a kill in the middle of a write
    assert [h["step"] for h in Run.load(run.dir).history] == [1, 2, 3]
    (run.dir / "run.json").write_text('{"status": "fin')
    assert Run.load(run.dir).status == "unknown"


def test_a_failing_final_save_still_writes_the_status_and_calls_on_done(lora_llama, parity, tmp_path, capsys):
    from transformers import TrainerCallback

    class BlockTheAdapterSave(TrainerCallback):  # a real failure: the save's temporary folder is a file
        def on_train_end(self, args, state, control, **kw):
            (tmp_path / "run" / f".adapter.tmp{os.getpid()}").write_text("in the way")

    model, tok = lora_llama
    done = []
    with pytest.raises(ValueError, match="should be a directory"):  # PEFT's own error, re-raised
        run = lora_nb.train(model, tok, parity[0], steps=3, batch_size=4, output_dir=str(tmp_path / "run"),
                            callbacks=[BlockTheAdapterSave()], progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and "final save failed" in info["message"] and info["saved_step"] == 3
    assert "failed at step 3" in capsys.readouterr().out
    run = lora_nb.train(model, tok, parity[0], steps=2, batch_size=4, output_dir=str(tmp_path / "run2"),
                        background=True, progress=False)
    run.on_done(done.append)
    run.wait()
    assert done == [run]


# --- nothing silently wrong -------------------------------------------------------------------

def test_divergence_stops_at_the_first_non_finite_step_and_keeps_a_finite_adapter(lora_llama, parity, in_tmp, capsys):
    import torch
    from safetensors.torch import load_file

    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=20, batch_size=4, lr=1e30, warmup=0, progress=False)
    out = capsys.readouterr().out
    assert run.status == "diverged" and run.step < 20
    assert f"diverged at step {run.step}" in out and "learning rate (1e+30)" in out and "finished" not in out
    weights = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    assert Run.load(run.dir).status == "diverged"


def test_one_model_trains_one_run_at_a_time_and_generate_waits(lora_llama, parity, in_tmp):
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=10_000, batch_size=4, background=True, progress=False)
    try:
        with pytest.raises(lora_nb.ConfigError, match=rf"is training in run {run.name}.*first"):
            lora_nb.train(model, tok, parity[0], steps=2, background=True, progress=False)
        with pytest.raises(lora_nb.ConfigError, match=rf"is training in run {run.name}"):
            lora_nb.generate(model, tok, "Is 7 even or odd?")
        with pytest.raises(lora_nb.ConfigError, match=rf"is training in run {run.name}.*before changing its adapter"):
            lora_nb.inject(model, r=2, verbose=False)
        assert run.running and model.training
    finally:
        run.stop()
        run.wait(timeout=120)
    assert run.status == "stopped"
    assert isinstance(lora_nb.generate(model, tok, "Is 7 even or odd?", max_new_tokens=2), str)


def test_a_save_during_training_links_the_checkpoints_adapter(lora_llama, parity, tmp_path):
    # the trainer has just written the adapter into its checkpoint: the run's adapter takes those
    # files (hard links) instead of serialising the weights again, and stays a loadable adapter
    from transformers import TrainerCallback

    model, tok = lora_llama
    seen = []

    class AfterSave(TrainerCallback):  # runs after lora_nb's own on_save
        def on_save(self, args, state, control, **kw):
            ours = tmp_path / "run" / "adapter"
            theirs = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            seen.append((state.global_step,
                         (ours / "adapter_model.safetensors").samefile(theirs / "adapter_model.safetensors"),
                         json.loads((ours / "lora_nb.json").read_text())["lora"]["r"],
                         (ours / "tokenizer.json").is_file()))

    lora_nb.train(model, tok, parity[0], steps=2, output_dir=str(tmp_path / "run"), callbacks=[AfterSave()],
                  progress=False, save_steps=1)
    assert seen == [(1, True, model.peft_config["default"].r, True), (2, True, model.peft_config["default"].r, True)]
    reloaded = lora_nb.load_adapter(model.base_model.model.config._name_or_path, tmp_path / "run" / "adapter")
    assert set(reloaded.state_dict()) == set(model.state_dict())


@pytest.mark.parametrize("overrides, note", [
    (dict(save_strategy="no"), "train.sft.save_strategy 'no' switches off checkpoints by steps: a crash or kill before "
                               "the end loses the whole run (nothing to resume)"),
    (dict(save_strategy="epoch"), "loses everything since the last epoch"),
    (dict(save_total_limit=1), "train.sft.save_total_limit 1 keeps fewer than 2 checkpoints"),
    (dict(save_only_model=True), "train.sft.save_only_model leaves the optimizer"),
])
def test_settings_that_weaken_crash_safety_say_so(lora_llama, parity, tmp_path, capsys, overrides, note):
    from lora_nb.training import lints

    lints._shown.clear()
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=2, batch_size=4, output_dir=str(tmp_path / "run"), progress=False,
                        **overrides)
    assert run.status == "finished"
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: train.sft.")]
    assert len(notes) == 1 and note in notes[0]
