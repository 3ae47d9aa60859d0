"""suggest(): a recipe from the task, the data size and the GPU, each choice explained and consistent
with the memory estimator and with the lints train() runs."""

from __future__ import annotations

import json

import pytest
import yaml

import lora_nb
from lora_nb.core.errors import ConfigError
from lora_nb.training.lints import lints
from lora_nb.model.memory import GIB, estimate


@pytest.fixture(scope="module")
def seven_b():
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       vocab_size=32000, name_or_path="meta-llama/Llama-2-7b-hf")


def test_qlora_only_when_lora_does_not_fit(seven_b):
    roomy = lora_nb.suggest(seven_b, rows=5000, gpu_gb=80)
    small = lora_nb.suggest(seven_b, rows=5000, gpu_gb=10)
    assert roomy.model.quant is None and roomy.train.gradient_checkpointing is False and roomy.train.batch_size == 8
    assert small.model.quant == "4bit"
    # the estimator agrees with each choice: what was picked fits, bf16 LoRA at batch 1 does not fit 10 GiB
    picked = estimate(seven_b, quant="4bit", r=small.lora.r, batch_size=small.train.batch_size, max_length=1024,
                      device="gpu")
    assert picked.total(small.train.gradient_checkpointing) <= 10 * GIB
    assert estimate(seven_b, r=small.lora.r, batch_size=1, max_length=1024, device="gpu").total(True) > 10 * GIB
    assert ("LoRA in bf16 needs" in small.reasons["model.quant"]
            and "4-bit (QLoRA) needs" in small.reasons["model.quant"])
    assert small.train.batch_size * small.train.grad_accum == 16


def test_rank_dropout_epochs_and_eval_follow_the_task_and_rows(seven_b):
    few, some, many = (lora_nb.suggest(seven_b, task="instruction", rows=n, gpu_gb=80) for n in (300, 5000, 200_000))
    assert (few.lora.r, some.lora.r, many.lora.r) == (8, 16, 32)
    assert (few.lora.dropout, some.lora.dropout, many.lora.dropout) == (0.1, 0.05, 0.01)
    assert (few.train.epochs, some.train.epochs, many.train.epochs) == (3, 2, 1)
    assert all(r.lora.alpha == 2 * r.lora.r for r in (few, some, many))
    by_task = {task: lora_nb.suggest(seven_b, task=task, rows=5000, gpu_gb=80)
               for task in ("classification", "instruction", "domain")}
    assert [by_task[t].lora.r for t in ("classification", "instruction", "domain")] == [8, 16, 32]
    assert by_task["classification"].lora.targets == "attention" and by_task["domain"].lora.targets == "all-linear"
    assert lora_nb.suggest(seven_b, rows=20, gpu_gb=80).data.eval is None  # too few to hold out: the reason says so
    assert some.data.eval == 0.1 and "500 rows held out" in some.reasons["data.eval"]


def test_the_rank_stays_below_the_smallest_adapted_dimension(llama):
    recipe = lora_nb.suggest(llama, task="domain", rows=200_000, gpu_gb=16)  # 64 asked; k_proj is 32→16 here
    assert recipe.lora.r < 16 and "smallest adapted dimension (16)" in recipe.reasons["lora.r"]


def test_targets_follow_the_architecture(tiny):
    phi3 = lora_nb.suggest(str(tiny("phi3")), task="classification", gpu_gb=16)
    assert "qkv_proj" in phi3.reasons["lora.targets"] and "q_proj" not in phi3.reasons["lora.targets"]
    bert = lora_nb.suggest(str(tiny("bert")), task="classification", gpu_gb=16)
    assert bert.lora.targets == "attention" and "classifier head" in bert.reasons["lora.targets"]


def test_reasons_are_yaml_comments_that_read_back_as_the_same_recipe(seven_b):
    recipe = lora_nb.suggest(seven_b, rows=5000, gpu_gb=12)
    text = recipe.to_yaml()
    assert "  r: 16  # instruction" in text and "  quant: 4bit  # LoRA in bf16 needs" in text
    assert yaml.safe_load(text) == recipe.to_dict()
    assert lora_nb.Recipe.from_yaml(text).to_dict() == recipe.to_dict()


def test_a_reason_cannot_change_what_the_yaml_says(seven_b):
    recipe = lora_nb.suggest(seven_b, rows=5000, gpu_gb=80)
    recipe.reasons["lora.r"] = "x\nr: 999"  # a line break in a reason stays inside the comment
    recipe.reasons["model.name"] = "#: {"
    assert yaml.safe_load(recipe.to_yaml()) == recipe.to_dict()


def test_a_suggested_recipe_trips_no_lint(seven_b):
    for task in ("classification", "instruction", "domain"):
        recipe = lora_nb.suggest(seven_b, task=task, rows=5000, gpu_gb=24)
        report = lora_nb.discover(seven_b)
        adapted = {m.name: (m.in_features, m.out_features) for m in report.modules
                   if m.name in report.names(recipe.lora.targets)}
        assert lints(lora=recipe.lora, lr=recipe.train.lr, has_eval=recipe.data.eval is not None, adapted=adapted) == []


def test_a_suggested_recipe_runs(llama, in_tmp, capsys):
    from lora_nb.demo import tasks

    rows = tasks.split(120, 1)[0]
    data = in_tmp / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = lora_nb.suggest(llama, task="instruction", rows=len(rows), gpu_gb=16)
    recipe.data.path, recipe.train.steps, recipe.train.max_length = str(data), 2, 64
    run = lora_nb.run(recipe)
    assert run.status == "finished" and run.recipe.lora.r == recipe.lora.r
    assert "note:" not in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, key, fragment", [
    ({"task": "instructions"}, "task", "Did you mean 'instruction'"),
    ({"rows": 0}, "rows", "positive"),
    ({"gpu_gb": -1}, "gpu_gb", "positive"),
    ({"gpu_gb": 4}, "gpu_gb", "too small"),
])
def test_bad_input_names_the_key(seven_b, kwargs, key, fragment):
    with pytest.raises(ConfigError, match=key) as e:
        lora_nb.suggest(seven_b, **kwargs)
    assert fragment in str(e.value)


def test_a_config_without_a_name_is_refused():
    from transformers import LlamaConfig

    with pytest.raises(ConfigError, match="name_or_path"):
        lora_nb.suggest(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4))
