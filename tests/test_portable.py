"""lora_nb.hf's contract: scripts copy its modules, so they need nothing of lora_nb, and a rendered
script defines every name it uses."""

from __future__ import annotations

import ast
import builtins
import inspect
import shutil
import sys

import pytest

import lora_nb
from lora_nb.hf import devices, folders, formats, memory_model, models
from lora_nb.export.script import script_settings
from lora_nb.model.loading import resolve_dtype

SHARED = (devices, memory_model, models, formats, folders)  # what lora_nb.export.script copies
ALLOWED = {"torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes"}


def imported_modules(source):
    """Top-level names of every module ``source`` imports, in functions too; relative imports as '.'."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." if node.level else node.module.split(".")[0])
    return found


def undefined_names(source):
    """Names ``source`` reads that nothing in it defines and that are no builtins (scopes pooled)."""
    defined, used = set(dir(builtins)), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
    return used - defined


def test_the_checks_catch_what_they_look_for():
    assert undefined_names("def f(a):\n    return [a + b for c in a]") == {"b"}
    assert imported_modules("def f():\n    from .recipe import x\n    import lora_nb.data.prepare") == {".", "lora_nb"}


def test_shared_code_imports_only_the_standard_library_the_training_stack_and_itself():
    allowed = ALLOWED | set(sys.stdlib_module_names) | {"."}

    for module in SHARED:
        source = inspect.getsource(module)
        assert imported_modules(source) <= allowed, module.__name__
        relative = {node.module for node in ast.walk(ast.parse(source))
                    if isinstance(node, ast.ImportFrom) and node.level}
        assert relative <= {m.__name__.rsplit(".", 1)[1] for m in SHARED}, module.__name__


@pytest.fixture
def recipe(tiny):
    return lora_nb.Recipe.from_dict({"model": {"name": str(tiny("gpt2")), "quant": "4bit"},
                                     "data": {"path": "d.jsonl", "eval": 0.25},
                                     "lora": {"targets": "attention"}, "train": {"steps": 1}})


def test_a_rendered_script_defines_every_name_it_uses(recipe):
    script = lora_nb.to_script(recipe)

    assert undefined_names(script) == set()
    assert "lora_nb" not in imported_modules(script)


def test_settings_never_shadow_the_shared_code(recipe):
    shared_names = set()
    for module in SHARED:
        shared_names |= {n.id for node in ast.parse(inspect.getsource(module)).body if isinstance(node, ast.Assign)
                         for n in node.targets} | {name for name, _ in inspect.getmembers(module, inspect.isfunction)}

    assert not set(script_settings(recipe)) & shared_names


def test_one_dtype_table_both_ways():
    for name in devices.TORCH_DTYPES:
        assert resolve_dtype(name) == devices.resolve_dtype(name)
        assert devices.dtype_name(devices.resolve_dtype(name)) == name
    with pytest.raises(lora_nb.ConfigError, match="model.dtype"):
        resolve_dtype("float64")


def test_eval_is_a_split_of_the_source_or_data_of_its_own(tmp_path, monkeypatch):
    from datasets import Dataset, DatasetDict

    monkeypatch.chdir(tmp_path)
    folder = str(tmp_path / "saved")
    DatasetDict({"train": Dataset.from_list([{"text": "t"}] * 4),
                 "test": Dataset.from_list([{"text": "from the split"}])}).save_to_disk(folder)
    Dataset.from_list([{"text": "from the folder"}]).save_to_disk(tmp_path / "test")  # eval data named like the split
    rows = formats.load_rows(folder)

    assert formats.split_eval(rows, "test", 0, folder)[1]["text"] == ["from the folder"]  # an existing path wins
    shutil.rmtree(tmp_path / "test")
    assert formats.split_eval(rows, "test", 0, folder)[1]["text"] == ["from the split"]
    train, held = formats.split_eval(rows, None, 0, folder)
    assert train is rows and held is None


def test_typed_paths_expand_in_exported_scripts_too(llama, parity, tmp_path, monkeypatch):
    """A recipe that says ~/models/m or $DATA/train.jsonl loads the same in lora_nb and in its
    exported script: the expansion lives in lora_nb.hf, which every script carries."""
    import json

    home = tmp_path / "home"
    shutil.copytree(llama, home / "models" / "m")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in parity[0][:8]))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LORA_NB_DATA", str(tmp_path))
    model, tok = models.load_model_and_tokenizer("~/models/m", dtype=resolve_dtype("fp32"),
                                                   model_class="LlamaForCausalLM")
    assert type(model).__name__ == "LlamaForCausalLM" and tok.pad_token is not None
    assert len(formats.load_rows("$LORA_NB_DATA/train.jsonl")) == 8
    recipe = lora_nb.Recipe.from_dict({"model": {"name": "~/models/m"}, "data": {"path": "$LORA_NB_DATA/train.jsonl"}})
    script = lora_nb.to_script(recipe)
    assert "def expand_user(" in script and "name = expand_user(name)" in script
