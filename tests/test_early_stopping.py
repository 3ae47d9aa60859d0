"""train.early_stopping: a run that stops once its eval loss stops improving, keeps the best eval's adapter,
says so in its status, resumes with the same stop, and an exported script that stops at the same step."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from safetensors.torch import load_file

import lora_nb
from lora_nb.core.errors import ConfigError
from lora_nb.notebook.live import status_line
from lora_nb.recipe.schema import Recipe, TrainSection
from lora_nb.runs.record import Run

# min_delta 10 makes every eval after the first "no improvement" (eval losses here are ~5.6): with patience 2 and
# an eval every 2 steps the run stops at step 6 whatever the losses; the best eval is still the lowest logged.
STOPS = dict(steps=30, lr=1e-2, scheduler="constant", batch_size=4, max_length=64, eval=0.25, eval_steps=2,
             early_stopping={"patience": 2, "min_delta": 10})


@pytest.fixture
def lora_llama(llama):
    model, tok = lora_nb.load(llama)
    return lora_nb.inject(model, r=4, targets="all-linear", verbose=False), tok


def evals(history):
    return [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]


def weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def same(a, b):
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_a_run_stops_early_and_keeps_the_best_adapter(lora_llama, parity, in_tmp, capsys):
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], progress=False, **STOPS)

    assert run.status == "finished" and run.step == 6 and run.max_steps == 30
    assert run.stopped_early == "stopped early at step 6 (eval_loss did not improve for 2 evals)"
    best_step, best_loss = min(evals(run.history), key=lambda e: e[1])
    assert run.best == {"metric": "eval_loss", "value": best_loss, "step": best_step}
    out = capsys.readouterr().out
    assert re.search(rf"stopped early at step 6 \(eval_loss did not improve for 2 evals\); best eval_loss "
                     rf"{best_loss:.4f} at step {best_step}, its adapter saved in ", out)
    # the kept adapter is the best eval's checkpoint (kept from pruning), not the last step's
    checkpoints = run.dir / "checkpoints"
    kept = weights(run.adapter_dir)
    assert same(kept, weights(checkpoints / f"checkpoint-{best_step}"))
    if best_step != 6:
        assert not same(kept, weights(checkpoints / "checkpoint-6"))
    # what the folder says, read back, and how a notebook shows it
    info = json.loads((run.dir / "run.json").read_text())
    assert info["best"]["step"] == best_step and info["stopped_early"] == run.stopped_early
    again = Run.load(run.dir)
    assert again.best == run.best and again.stopped_early == run.stopped_early
    assert status_line(again).startswith("stopped early at step 6 (eval_loss did not improve for 2 evals) · step 6/30")
    assert f"best eval_loss (adapter)  {best_loss:.4f} at step {best_step}" in str(again)
    assert Recipe.from_yaml(run.dir / "recipe.yaml").train.early_stopping == {
        "patience": 2, "metric": "eval_loss", "min_delta": 10.0}


def test_a_run_early_stopping_never_stops_finishes_with_the_best_adapter(lora_llama, parity, in_tmp):
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], progress=False, **{**STOPS, "steps": 4, "early_stopping": 5})
    assert run.status == "finished" and run.step == 4 and run.stopped_early == ""
    best_step = min(evals(run.history), key=lambda e: e[1])[0]
    assert run.best["step"] == best_step
    assert same(weights(run.adapter_dir), weights(run.dir / "checkpoints" / f"checkpoint-{best_step}"))


def test_a_resumed_run_carries_on_its_count_of_evals_without_improvement(lora_llama, llama, parity, in_tmp):
    from transformers import TrainerCallback

    class StopAtFour(TrainerCallback):  # after the eval of step 4: one eval without improvement so far
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 4:
                control.should_training_stop = control.should_save = True

    model, tok = lora_llama
    whole = lora_nb.train(model, tok, parity[0], progress=False, **STOPS)
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, targets="all-linear", verbose=False)
    first = lora_nb.train(model, tok, parity[0], progress=False, callbacks=[StopAtFour()], **STOPS)
    assert first.status == "stopped" and first.step == 4 and first.stopped_early == ""
    resumed = lora_nb.train(model, tok, parity[0], progress=False, resume=str(first.dir), **STOPS)
    assert resumed.step == 6 and resumed.stopped_early == whole.stopped_early  # a count from 0 would stop at 8
    assert evals(resumed.history) == evals(whole.history) and resumed.best == whole.best
    assert same(weights(resumed.adapter_dir), weights(whole.adapter_dir))


def test_early_stopping_needs_eval_data(lora_llama, parity, in_tmp):
    model, tok = lora_llama
    with pytest.raises(ConfigError, match=r"^data.eval: is needed by train.early_stopping") as said:
        lora_nb.train(model, tok, parity[0], steps=4, early_stopping=3, progress=False)
    assert "\n" not in str(said.value) and not os.path.exists("runs")


def test_the_setting_a_number_or_a_mapping():
    assert TrainSection(early_stopping=3).early_stopping == {"patience": 3, "metric": "eval_loss", "min_delta": 0.0}
    assert TrainSection(early_stopping=None).early_stopping is None
    accuracy = TrainSection(early_stopping={"metric": "mean_token_accuracy", "min_delta": 0.01}).early_stopping
    assert accuracy == {"patience": 3, "metric": "eval_mean_token_accuracy", "min_delta": 0.01}
    recipe = Recipe.from_dict({"model": {"name": "m"}, "data": {"path": "d"}, "train": {"early_stopping_patience": 4}})
    assert recipe.train.early_stopping["patience"] == 4  # transformers' name for the patience


@pytest.mark.parametrize("value, message", [
    (0, r"train.early_stopping.patience: must be a positive whole number of evals"),
    (True, r"train.early_stopping.patience: must be a positive whole number"),
    ({"patience": 2.5}, r"train.early_stopping.patience: must be a positive whole number"),
    ({"min_delta": -0.1}, r"train.early_stopping.min_delta: must be a number, 0 or more \(got -0.1\)"),
    ({"metric": "eval_accuracy"}, r"train.early_stopping.metric: is not a metric the trainer logs on eval "
                                  r"\(got 'eval_accuracy'\). Allowed: eval_loss, eval_mean_token_accuracy"),
    ({"patients": 2}, r"train.early_stopping.patients: unknown key. Allowed: patience, metric, min_delta. "
                      r"Did you mean 'patience'\?"),
])
def test_bad_settings_are_one_line(value, message):
    with pytest.raises(ConfigError, match=f"^{message}") as said:
        TrainSection(early_stopping=value)
    assert "\n" not in str(said.value)


def test_the_trainer_settings_it_makes():
    from lora_nb.training.sft_settings import sft_config_kwargs

    kwargs = sft_config_kwargs(TrainSection(steps=100, eval_steps=5, early_stopping={"metric": "mean_token_accuracy"}),
                               "out", has_eval=True, rows=100)
    assert kwargs["load_best_model_at_end"] is True and kwargs["greater_is_better"] is True
    assert kwargs["metric_for_best_model"] == "eval_mean_token_accuracy"
    assert kwargs["save_steps"] == kwargs["eval_steps"] == 5
    assert "load_best_model_at_end" not in sft_config_kwargs(TrainSection(steps=100), "out", has_eval=True, rows=100)
    with pytest.raises(ConfigError, match=r"^train.sft.save_steps: is set by train.early_stopping"):
        sft_config_kwargs(TrainSection(steps=100, early_stopping=2, sft={"save_steps": 7}), "out", has_eval=True,
                          rows=100)


def test_the_exported_script_stops_at_the_same_step_with_the_same_losses(llama, parity, tmp_path):
    from test_export import recipe_for, script_losses, without_lora_nb, write_rows

    data = write_rows(tmp_path / "train.jsonl", parity[0])
    recipe = recipe_for(llama, data, str(tmp_path / "run"), steps=30, lr=1e-2, scheduler="constant", eval_steps=2,
                        early_stopping={"patience": 2, "min_delta": 10})
    run = lora_nb.run(recipe)
    assert run.step == 6 and run.stopped_early
    script = tmp_path / "train_lora.py"
    script.write_text(lora_nb.to_script(recipe))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(without_lora_nb(script, "--output-dir", tmp_path / "script"), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    train, evaluated = script_losses(tmp_path / "script")
    assert train == [(h["step"], h["loss"]) for h in run.history if "loss" in h] and train[-1][0] == 6
    assert evaluated == evals(run.history)
    assert same(weights(tmp_path / "script" / "adapter"), weights(run.adapter_dir))  # both the best eval's


def test_a_script_without_early_stopping_carries_none_of_it(llama, parity, tmp_path):
    from test_export import recipe_for, write_rows

    script = lora_nb.to_script(recipe_for(llama, write_rows(tmp_path / "train.jsonl", parity[0]), "out"))
    assert "EARLY_STOPPING" not in script and "early_stopping(" not in script
