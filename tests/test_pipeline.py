"""One orchestrator: a recipe run through the API, the CLI and a %%lora cell trains the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import lora_nb
from lora_nb.runs.record import Run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def recipe_for(llama, parity, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))

    def make(out: str) -> lora_nb.Recipe:
        return lora_nb.Recipe.from_dict({
            "model": {"name": llama},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "targets": "attention"},
            "data": {"path": str(data)},
            # a seed other than the default: the %%lora path used to initialise the adapter with 42
            "train": {"steps": 3, "batch_size": 4, "max_length": 64, "lr": 1e-3, "seed": 7},
            "output_dir": str(tmp_path / out),
        })

    return make


def results(folder: Path):
    losses = [(h["step"], h["loss"]) for h in Run.load(folder).history if "loss" in h]
    return losses, load_file(folder / "adapter" / "adapter_model.safetensors")


def test_api_cli_and_a_recipe_cell_train_the_same(recipe_for, tmp_path, model_cache):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    api = lora_nb.run(recipe_for("api"))

    recipe_for("cli").to_yaml(tmp_path / "cli.yaml")
    env = dict(os.environ, LORA_NB_CACHE=model_cache, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    cli = subprocess.run([sys.executable, "-m", "lora_nb.cli", "run", str(tmp_path / "cli.yaml")], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr[-2000:]

    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    try:
        shell.run_line_magic("load_ext", "lora_nb")
        cell = shell.run_cell_magic("lora", "", recipe_for("cell").to_yaml())
    finally:
        InteractiveShell.clear_instance()

    expected_losses, expected_weights = results(api.dir)
    assert len(expected_losses) == 3
    for folder in (tmp_path / "cli", cell.dir):
        losses, weights = results(folder)
        assert losses == expected_losses, folder
        assert weights.keys() == expected_weights.keys()
        assert all((weights[k] == expected_weights[k]).all() for k in weights), folder


def test_the_adapter_is_initialised_with_the_recipes_seed(recipe_for, llama):
    from peft import get_peft_model_state_dict

    def init(**seed):
        model, _ = lora_nb.load(llama)
        return get_peft_model_state_dict(lora_nb.inject(model, r=4, alpha=8, dropout=0.1, targets="attention",
                                                        verbose=False, **seed))

    from lora_nb.experiments.pipeline import build

    built, _ = build(recipe_for("unused"))
    weights = get_peft_model_state_dict(built)
    assert all((weights[k] == v).all() for k, v in init(seed=7).items())
    assert not all((weights[k] == v).all() for k, v in init(seed=42).items())


def test_an_adapter_made_outside_a_recipe_exports_with_its_own_seed(llama, parity, tmp_path):
    """inject (seed 42 by default), then train with seed 7: the run's recipe and script keep both."""
    import ast

    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    run = lora_nb.train(model, tok, parity[0], steps=1, batch_size=4, seed=7, output_dir=str(tmp_path / "run"),
                        progress=False)
    recipe = lora_nb.Recipe.from_yaml(run.dir / "recipe.yaml")
    assert (recipe.lora.seed, recipe.train.seed) == (42, 7)
    assert json.loads((run.adapter_dir / "lora_nb.json").read_text())["lora"]["seed"] == 42
    values = {t.id: ast.literal_eval(n.value) for n in ast.parse(lora_nb.to_script(recipe)).body
              if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
              and (t.id.endswith("SEED") or t.id == "SFT_CONFIG")}
    # the training seed rides in SFT_CONFIG; SEED (the eval split's) is left out with the split it seeds
    assert (values["ADAPTER_SEED"], values["SFT_CONFIG"]["seed"], "SEED" in values) == (42, 7, False)


def test_library_names_train_the_same_as_lora_nb_keys(recipe_for, llama, tmp_path):
    """A recipe in transformers'/PEFT's/TRL's names, run on a base given by folder, and train()'s keywords in
    those names, train exactly as lora_nb's own keys do."""
    plain = recipe_for("plain")
    named = lora_nb.Recipe.from_dict({
        "model": {"model_name_or_path": "replaced-by-base"},
        "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": "attention"},
        "data": {"dataset_name": plain.data.path},
        "train": {"max_steps": 3, "per_device_train_batch_size": 4, "max_seq_length": 64, "learning_rate": 1e-3,
                  "seed": 7},
        "output_dir": str(tmp_path / "named")})
    ours, theirs = lora_nb.run(plain), lora_nb.run(named, base=llama)  # base: a folder, loaded as the recipe says
    assert theirs.recipe.model.name == llama and (theirs.recipe.lora, theirs.recipe.train) == (ours.recipe.lora,
                                                                                             ours.recipe.train)
    assert _same_training(ours.dir, theirs.dir)
    with pytest.raises(lora_nb.ConfigError, match=r"^base: a loaded model comes with its tokenizer here"):
        lora_nb.run(plain, base=object())

    def trained(out: str, **settings):
        model, tok = lora_nb.load(llama)
        model = lora_nb.inject(model, r=4, alpha=8, targets="attention", seed=7, verbose=False)
        return lora_nb.train(model, tok, plain.data.path, seed=7, output_dir=str(tmp_path / out), progress=False,
                             **settings)

    ours = trained("ours", steps=2, lr=1e-3, batch_size=4, max_length=64, warmup=0.5, scheduler="linear")
    theirs = trained("theirs", max_steps=2, learning_rate=1e-3, per_device_train_batch_size=4, max_seq_length=64,
                     warmup_ratio=0.5, lr_scheduler_type="linear")
    assert theirs.recipe.train == ours.recipe.train and _same_training(ours.dir, theirs.dir)


def _same_training(a: Path, b: Path) -> bool:
    (losses_a, weights_a), (losses_b, weights_b) = results(a), results(b)
    return losses_a == losses_b and weights_a.keys() == weights_b.keys() and all(
        (weights_a[k] == weights_b[k]).all() for k in weights_a)
