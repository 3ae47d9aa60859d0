"""The ``lora-nb`` command, run as a real subprocess: targets, export, run, and errors without tracebacks."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import lora_nb
from lora_nb.model.targets import targets_with_memory
from lora_nb.recipe.schema import Recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cli(model_cache):
    """cli(*args, cwd=...) -> CompletedProcess of ``python -m lora_nb.cli args``, offline, on the test cache."""
    env = dict(os.environ, LORA_NB_CACHE=model_cache, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lora_nb.cli", *map(str, args)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)

    return run


@pytest.fixture
def recipe_file(tmp_path, llama, parity):
    """A tiny recipe (2 steps on the parity rows) and the folder its run goes to."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in parity[0]))
    out = tmp_path / "out"
    recipe = Recipe.from_dict({
        "model": {"name": llama},
        "lora": {"r": 4, "targets": "attention"},
        "data": {"path": str(data)},
        "train": {"steps": 2, "batch_size": 4, "max_length": 64, "sft": {"weight_decay": 0.125}},
        "output_dir": str(out),
    })
    path = tmp_path / "recipe.yaml"
    recipe.to_yaml(path)
    return path, out


def test_targets_prints_the_discovery_table(cli, llama, tmp_path):
    result = cli("targets", llama, "--r", "4", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    for role in ("attention", "mlp", "all-linear (PEFT)"):
        assert role in result.stdout
    assert "r=4" in result.stdout
    assert result.stdout.strip() == str(targets_with_memory(llama, r=4)).strip()
    assert "Training memory" in result.stdout and "with gradient checkpointing" in result.stdout


def lora_nb_imports(script: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(script)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return [n for n in names if n.split(".")[0] == "lora_nb"]


def test_export_prints_or_writes_a_standalone_script(cli, recipe_file, tmp_path):
    path, _ = recipe_file
    target = tmp_path / "train_lora.py"

    printed = cli("export", path, cwd=tmp_path)
    written = cli("export", path, "-o", target, cwd=tmp_path)

    assert printed.returncode == 0, printed.stderr
    script = printed.stdout
    ast.parse(script)
    assert lora_nb_imports(script) == []
    assert "from trl import SFTConfig, SFTTrainer" in script and "def sft_keywords(" in script
    assert f"MODEL = {Recipe.from_yaml(path).model.name!r}" in script
    assert written.returncode == 0, written.stderr
    assert str(target) in written.stdout
    assert target.read_text().strip() == script.strip() == lora_nb.to_script(Recipe.from_yaml(path)).strip()


def test_run_trains_the_recipe(cli, recipe_file, tmp_path):
    path, out = recipe_file

    result = cli("run", path, cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert Recipe.from_yaml(out / "recipe.yaml").lora.targets == "attention"
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "loss" in row] == [1, 2]
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert "finished" in result.stdout
    args = torch.load(out / "checkpoints" / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert args.weight_decay == 0.125  # the sft section reached SFTConfig


@pytest.mark.parametrize(
    "verb, section, key, nearest",
    [("run", "train: {stpes: 2}", "train.stpes", "steps"), ("export", "trian: {steps: 2}", "trian", "train"),
     ("run", "lora: {variant: dorra}", "lora.variant", "dora"),
     ("run", "train: {max_step: 2}", "train.max_step", "steps"),
     ("export", "train: {learning_rte: 0.001}", "train.learning_rte", "lr")],
)
def test_bad_setting_exits_2_with_one_line(cli, llama, tmp_path, verb, section, key, nearest):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"model: {{name: {llama}}}\n{section}\n")

    result = cli(verb, path, cwd=tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"lora-nb: {key}")
    assert f"Did you mean {nearest!r}" in lines[0]
    assert result.stdout == ""


def test_a_recipe_in_the_libraries_names_exports_the_same_script(cli, recipe_file, tmp_path):
    path, _ = recipe_file
    raw = Recipe.from_yaml(path).to_dict()
    named = dict(raw, lora={"r": 4, "target_modules": "attention", "lora_alpha": 32, "use_rslora": False},
                 train={"max_steps": 2, "per_device_train_batch_size": 4, "max_seq_length": 64,
                        "sft": {"weight_decay": 0.125}},
                 model={"model_name_or_path": raw["model"]["name"], "torch_dtype": "auto"})
    named_path = tmp_path / "named.yaml"
    named_path.write_text(yaml.safe_dump(named))

    ours, theirs = cli("export", path, cwd=tmp_path), cli("export", named_path, cwd=tmp_path)

    assert theirs.returncode == 0, theirs.stderr
    assert theirs.stdout == ours.stdout and "LoraConfig" in theirs.stdout
    named["train"]["learning_rate"], named["train"]["lr"] = 1e-3, 2e-3
    named_path.write_text(yaml.safe_dump(named))
    conflict = cli("export", named_path, cwd=tmp_path)
    assert conflict.returncode == 2 and conflict.stderr.strip() == (
        "lora-nb: train.lr: given twice, as learning_rate=0.001 and lr=0.002: keep one.")


def test_missing_data_file_exits_2_without_traceback(cli, recipe_file, tmp_path):
    path, out = recipe_file
    recipe = Recipe.from_yaml(path)
    recipe.data.path = str(tmp_path / "missing.jsonl")
    recipe.to_yaml(path, overwrite=True)

    result = cli("run", path, cwd=tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "lora-nb: data.path: no such file" in result.stderr
    assert "missing.jsonl" in result.stderr


def test_export_and_demo_never_overwrite(cli, recipe_file, tmp_path):
    path, _ = recipe_file
    data = Recipe.from_yaml(path).data.path
    before = Path(data).read_bytes()
    refused = cli("export", path, "-o", data, cwd=tmp_path)  # the data file itself, the worst case
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "lora-nb: --output: the file exists" in refused.stderr and "--overwrite" in refused.stderr
    assert Path(data).read_bytes() == before
    target = tmp_path / "old.py"
    target.write_text("# mine")
    forced = cli("export", path, "-o", target, "--overwrite", cwd=tmp_path)
    assert forced.returncode == 0 and target.read_text().startswith('"""')
    target.write_text("# mine")
    older = cli("export", path, "-o", target, "--force", cwd=tmp_path)  # the older name still works
    assert older.returncode == 0 and target.read_text().startswith('"""')

    taken = tmp_path / "demo"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    for option in ("--output-dir", "--out"):  # --out: its older name
        demo = cli("demo", option, taken, cwd=tmp_path)
        assert demo.returncode == 2 and "lora-nb: output_dir: the folder is not empty" in demo.stderr
        assert "--overwrite" in demo.stderr
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]


def test_export_for_a_launch_writes_the_accelerate_config_beside_the_script(cli, recipe_file, tmp_path):
    import yaml

    from lora_nb.export.launch import launch_command, launch_config

    path, _ = recipe_file
    target, config = tmp_path / "train_lora.py", tmp_path / "accelerate_config.yaml"

    result = cli("export", path, "--launcher", "accelerate", "--gpus", "2", "--fsdp", "-o", target, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"wrote {target}", f"wrote {config}", launch_command(target, config)]
    assert launch_command(target, config) == f"accelerate launch --config_file {config} {target}"
    assert config.read_text() == launch_config(Recipe.from_yaml(path), 2, "fsdp")
    assert (yaml.safe_load(config.read_text())["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
            == "LlamaDecoderLayer")
    assert target.read_text().strip() == lora_nb.to_script(Recipe.from_yaml(path)).strip()

    target.unlink()  # the config is still there: refused before anything is written
    again = cli("export", path, "--launcher", "accelerate", "--gpus", "4", "-o", target, cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [again.stderr.strip()]
    assert again.stderr.startswith("lora-nb: --output: the file exists") and f"(got '{config}')" in again.stderr
    assert "--overwrite" in again.stderr
    assert not target.exists() and yaml.safe_load(config.read_text())["num_processes"] == 2


@pytest.mark.parametrize("options, message", [
    (["--launcher", "accelerate", "--gpus", "0", "-o", "t.py"],
     "--gpus: the number of GPUs (one process each) is required"),
    (["--launcher", "accelerate", "--gpus", "2", "--fsdp", "--deepspeed", "zero3", "-o", "t.py"],
     "--fsdp: one engine at a time"),
    (["--launcher", "accelerate", "--gpus", "2", "--deepspeed", "zero4", "-o", "t.py"],
     "--deepspeed: invalid value (got 'zero4'). Allowed: zero2, zero3."),
    (["--gpus", "2", "-o", "t.py"], "--gpus: configures a launch: add --launcher accelerate"),
    (["--launcher", "accelerate", "--gpus", "2"],
     "--launcher: writes the script and its accelerate config side by side"),
])
def test_bad_launch_options_exit_2_with_one_line(cli, recipe_file, tmp_path, options, message):
    path, _ = recipe_file

    result = cli("export", path, *options, cwd=tmp_path)

    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"lora-nb: {message}")
    assert not (tmp_path / "t.py").exists() and not (tmp_path / "accelerate_config.yaml").exists()
