"""Recipe.to_script(): a standalone script that reproduces Recipe.run()'s losses exactly."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys

import pytest

import lora_nb


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def recipe_for(llama, data, out, quant=None, **train):
    return lora_nb.Recipe.from_dict({
        "model": {"name": llama, "quant": quant},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "targets": "attention"},
        "data": {"path": data, "eval": 0.25},
        "train": {"steps": 6, "batch_size": 4, "max_length": 64, "eval_steps": 3, "lr": 1e-3, **train},
        "output_dir": out,
    })


def script_losses(folder):
    state = json.loads((folder / "checkpoints" / "trainer_state.json").read_text())
    return [(h["step"], h["loss"]) for h in state["log_history"] if "loss" in h], \
           [(h["step"], h["eval_loss"]) for h in state["log_history"] if "eval_loss" in h]


def run_losses(run):
    return [(h["step"], h["loss"]) for h in run.history if "loss" in h], \
           [(h["step"], h["eval_loss"]) for h in run.history if "eval_loss" in h]


def imports(script):
    tree = ast.parse(script)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    return names


@pytest.mark.parametrize("quant", [None, "4bit"])
def test_script_reproduces_the_run_losses(llama, parity, tmp_path, quant):
    data = write_rows(tmp_path / "train.jsonl", parity[0])
    recipe = recipe_for(llama, data, str(tmp_path / "run"), quant=quant)
    run = recipe.run()
    script = tmp_path / "train_lora.py"
    script.write_text(recipe.to_script())
    assert "lora_nb" not in imports(script.read_text())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # lora_nb is not needed
    done = subprocess.run([sys.executable, str(script), "--output-dir", str(tmp_path / "script")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    train, evals = script_losses(tmp_path / "script")
    assert (train, evals) == run_losses(run)
    assert len(train) == 6 and len(evals) == 2
    assert (tmp_path / "script" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "accelerate")),
                    reason="accelerate's launcher is not on PATH")
def test_script_runs_unchanged_under_accelerate_launch(llama, parity, tmp_path):
    data = write_rows(tmp_path / "train.jsonl", parity[0])
    recipe = recipe_for(llama, data, str(tmp_path / "run"), steps=3)
    run = recipe.run()
    script = tmp_path / "train_lora.py"
    script.write_text(recipe.to_script())
    launcher = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    done = subprocess.run([launcher, "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", str(script), "--output-dir", str(tmp_path / "acc")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert script_losses(tmp_path / "acc") == run_losses(run)


def test_values_cannot_inject_code(llama, tmp_path):
    nasty = "x'); import os; os.system('touch pwned') #\n\"\"\"\n"
    recipe = lora_nb.Recipe.from_dict({"model": {"name": llama}, "data": {"path": nasty + ".jsonl", "format": "alpaca"},
                                       "lora": {"targets": "attention"}, "train": {"steps": 1}, "output_dir": nasty})
    script = recipe.to_script()
    tree = ast.parse(script)
    constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name) and isinstance(node.value, ast.Constant)}
    assert constants["DATA"] == nasty + ".jsonl" and constants["OUTPUT_DIR"] == nasty
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "system"]
    assert not calls


def test_role_targets_are_resolved_into_the_script(tiny, tmp_path):
    recipe = lora_nb.Recipe.from_dict({"model": {"name": str(tiny("gpt2"))}, "data": {"path": "d.jsonl"},
                                       "lora": {"targets": "attention"}, "train": {"steps": 1}})
    script = recipe.to_script()
    assert "'target_modules': ['attn.c_attn', 'attn.c_proj']" in script  # not mlp.c_proj
    assert "GPT2LMHeadModel.from_pretrained" in script
