"""The shape of an exported script: docstring, imports, settings, main(), then only the helpers of
lora_nb.hf its recipe's path calls; and the templates it is assembled from are linted Python.

That each script still trains as lora_nb does is tests/test_export.py's (losses) and
tests/test_portable.py's (every name defined); here only what a script holds, and how it is cut.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_export import constants
from transformers import AutoConfig

import lora_nb
from lora_nb.export import assemble
from lora_nb.export.assemble import prune
from lora_nb.export.script import render_sweep_script, script_settings, template
from lora_nb.hf.memory_model import activation_bytes, model_dims, step_bytes

EXPORT = Path(lora_nb.__file__).parent / "export"
TEMPLATES = [EXPORT / "script_main.py", EXPORT / "sweep_main.py"]

# Lines of a script at most, for alpaca data export can read (771 for either before scripts were cut to
# their recipe's path, 538 and 604 before the format was decided at export, 442 and 514 before the memory
# model became a table of bytes per token computed at export; issue 19's targets were 250 and 350). Beyond
# its template (about 145 lines) a plain LoRA script holds the checkpointing decision (STEP_BYTES against
# the memory free), the alpaca conversion, the SFTConfig version branch, dtype and device choices and the
# checkpoint to resume, each with its docstring's first paragraph.
PLAIN_LINES, QLORA_LINES = 313, 365  # settings only left-out branches read are left out too (EVAL, SEED, COLUMNS...)


def recipe(llama, quant=None, path="train.jsonl", **sections):
    raw = {"model": {"name": llama, "quant": quant}, "lora": {"r": 4, "targets": "attention"},
           "data": {"path": path}, "train": {"steps": 2}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return lora_nb.Recipe.from_dict(raw)


def definitions(script):
    """Top-level function and constant names of ``script``, in order."""
    names = []
    for node in ast.parse(script).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def lint(*paths, rules="F,E9"):
    """ruff's pyflakes (F) and syntax (E9) rules (``rules``) on ``paths``: its report, empty when clean."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install ruff, or lora-nb[test])")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", rules, "--line-length",
                           "120", "--output-format", "concise", *map(str, paths)], capture_output=True, text=True)
    return "" if done.returncode == 0 else done.stdout + done.stderr


# --- the templates ---------------------------------------------------------------------------------


def test_the_templates_and_the_shared_code_pass_the_linter():
    assert lint(*TEMPLATES, Path(lora_nb.__file__).parent / "hf", *EXPORT.glob("*.py")) == ""


def test_the_templates_settings_are_the_recipes(llama):
    assert template("script_main.py").settings == list(script_settings(recipe(llama)))
    assert template("sweep_main.py").settings == ["SWEEP_DIR", "POINTS"]


def test_every_function_of_the_shared_code_is_typed():
    for path in (Path(lora_nb.__file__).parent / "hf").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                arguments = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                assert node.returns is not None and all(a.annotation is not None for a in arguments), \
                    f"{path.name}: {node.name}"


# --- what a script holds ---------------------------------------------------------------------------


def alpaca_file(folder):
    (folder / "train.jsonl").write_text(json.dumps({"instruction": "2+2?", "input": "", "output": "4"}) + "\n")


def test_a_plain_lora_script_reads_top_down_and_holds_no_quantisation_code(llama, in_tmp, tmp_path):
    alpaca_file(in_tmp)
    script = lora_nb.to_script(recipe(llama))
    names = definitions(script)

    assert len(script.splitlines()) <= PLAIN_LINES, len(script.splitlines())
    assert not {"load_quantized_model", "pin_4bit_layout", "release_checkpoint_memory", "quantization"} & set(names)
    for word in ("bitsandbytes", "4bit", "4-bit", "bnb", "kbit"):
        assert word not in script.lower(), word
    lines = script.splitlines()
    settings, main = lines.index(assemble.START), lines.index("def main() -> None:")
    assert settings < main and names[names.index("RESUME") + 1] == "main"  # settings, then main() first
    assert not any(line.startswith(("import ", "from ")) for line in lines[settings:])  # imports above them
    assert lines[-2:] == ['if __name__ == "__main__":', "    main()"]
    (tmp_path / "train_lora.py").write_text(script)
    assert lint(tmp_path / "train_lora.py", rules="F,E9,I") == ""  # no unused import, no undefined name, sorted
    assert script.count("import torch\n") == 1  # the helpers' own (lazy) imports of torch give way to the script's


def test_a_qlora_script_holds_the_quantised_loader_and_not_the_plain_one(llama, in_tmp, tmp_path):
    alpaca_file(in_tmp)
    script = lora_nb.to_script(recipe(llama, quant="4bit"))
    names = definitions(script)

    assert len(script.splitlines()) <= QLORA_LINES, len(script.splitlines())
    assert {"load_quantized_model", "pin_4bit_layout", "release_checkpoint_memory", "quantization"} <= set(names)
    assert "load_model" not in names and "if QUANTIZATION" not in script
    assert not [line for line in script.splitlines() if line.startswith(("from bitsandbytes", "import bitsandbytes"))]
    (tmp_path / "train_lora.py").write_text(script)
    assert lint(tmp_path / "train_lora.py", rules="F,E9,I") == ""


@pytest.mark.parametrize("data, loader", [("train.jsonl", "load_json"), ("d/train.csv", "load_csv"),
                                          ("train.parquet", "load_parquet"), ("org/dataset", "load_rows")])
def test_a_script_holds_the_reader_of_its_data_file_only(llama, data, loader):
    names = set(definitions(lora_nb.to_script(recipe(llama, path=data))))

    readers = {"load_json", "load_csv", "load_parquet", "load_rows", "load_saved_or_hub"}
    if loader == "load_rows":  # a Hub name or a folder: the reader of every kind
        assert readers <= names
    else:
        assert names & readers == {loader}


@pytest.mark.parametrize("fmt, helpers", [
    (None, {"detect_format", "to_sft_dataset", "sft_conversion", "alpaca_batch", "last_turn_batch",
            "masks_assistant_turns", "alpaca_user_text"}),  # no data here to decide it: the script detects it
    ("alpaca", {"alpaca_batch", "alpaca_user_text"}), ("messages", {"masks_assistant_turns", "last_turn_batch"}),
    ("text", set()), ("prompt_completion", set())])
def test_a_script_carries_the_conversion_of_its_format_only(llama, fmt, helpers):
    names = set(definitions(lora_nb.to_script(recipe(llama, data={"format": fmt}))))

    every = {"detect_format", "to_sft_dataset", "sft_conversion", "alpaca_batch", "last_turn_batch",
             "masks_assistant_turns", "alpaca_user_text"}
    assert names & every == helpers


@pytest.mark.parametrize("rows, fmt", [({"instruction": "2+2?", "output": "4"}, "alpaca"), ({"text": "hi"}, "text"),
                                       ({"messages": [{"role": "user", "content": "hi"}]}, "messages")])
def test_export_decides_the_format_of_data_it_can_read(llama, in_tmp, rows, fmt):
    (in_tmp / "train.jsonl").write_text(json.dumps(rows) + "\n")
    script = lora_nb.to_script(recipe(llama))
    names = set(definitions(script))

    assert f"DATA_FORMAT = {fmt!r}" in script.splitlines()
    assert "detect_format" not in names and "to_sft_dataset" not in names
    hub = lora_nb.to_script(recipe(llama, path="org/dataset"))  # not readable at export time: detected as it runs
    assert constants(hub).get("DATA_FORMAT") is None and "detect_format" in definitions(hub)


@pytest.mark.parametrize("eval, helpers", [(None, set()), (0.25, {"hold_out"}),  # split_eval can hold rows out too
                                           ("test", {"split_eval", "is_split", "hold_out"}),
                                           ("held.jsonl", {"split_eval", "is_split", "hold_out"})])
def test_eval_code_only_for_the_eval_data_a_recipe_has(llama, eval, helpers):
    names = set(definitions(lora_nb.to_script(recipe(llama, data={"eval": eval}))))

    assert names & {"hold_out", "split_eval", "is_split"} == helpers


def test_checkpointing_set_in_the_recipe_leaves_the_memory_model_out(llama):
    unset = set(definitions(lora_nb.to_script(recipe(llama))))
    fixed = set(definitions(lora_nb.to_script(recipe(llama, train={"gradient_checkpointing": True}))))

    memory = {"needs_checkpointing", "free_memory"}
    assert memory <= unset and not memory & fixed
    # the model's sizes become a table of bytes per token at export: the script carries no memory model
    assert not {"model_dims", "activation_bytes", "ACTIVATIONS", "HEAD_TILE", "step_bytes"} & unset
    assert constants(lora_nb.to_script(recipe(llama)))["STEP_BYTES"] == step_bytes(AutoConfig.from_pretrained(llama))
    assert "STEP_BYTES" not in constants(lora_nb.to_script(recipe(llama, train={"gradient_checkpointing": True})))


@pytest.mark.parametrize("batch_size, max_length", [(1, 16), (4, 1024), (8, 2048), (3, 700)])
def test_the_table_a_script_carries_counts_what_the_memory_model_counts(tiny, batch_size, max_length):
    """STEP_BYTES, per token, gives the bytes activation_bytes counts for any batch a user edits in."""
    tokens = batch_size * max_length
    for family in ("llama", "qwen3_moe"):
        config = AutoConfig.from_pretrained(tiny(family))
        for key, (per_token, head, tile) in step_bytes(config).items():
            device, size = key.split("-")
            layers, whole_head = activation_bytes(model_dims(config), batch_size=batch_size, max_length=max_length,
                                                  checkpointing=False, dtype_bytes=int(size), gpu=device == "gpu")
            assert tokens * per_token + min(tokens * head, tile) == layers + whole_head, (family, key)


def test_a_sweep_keeps_every_branch_a_varying_setting_decides(llama, tmp_path):
    points = [("plain", recipe(llama)), ("qlora", recipe(llama, quant="4bit"))]
    script = render_sweep_script(points, "runs/sweep-script")
    names = definitions(script)

    assert {"load_model", "load_quantized_model"} <= set(names) and "if QUANTIZATION:" in script
    assert names.index("sweep") < names.index("main") < names.index("load_model")
    assert script.rstrip().endswith("    sweep()")
    (tmp_path / "sweep_lora.py").write_text(script)
    assert lint(tmp_path / "sweep_lora.py", rules="F,E9,I") == ""


# --- the pruning itself ----------------------------------------------------------------------------

CODE = '''\
def f(x):
    out = []
    if Q:  # quantised
        out.append("q")
    else:
        out.append("plain")
    if E is None:
        return out + ["no eval"]
    elif isinstance(E, float):
        out.append("fraction")
    else:
        out.append("named")
    out.append(F or "detected")
    out.append(Q and Q.get("load_in_4bit") and x)
    out.append("text" if F in ("text", "prompt_completion") else "converted")
    if x and not C:
        out.append("x")
    return out
'''


@pytest.mark.parametrize("q, e, f, c", itertools.product([None, {"load_in_4bit": True}, {"load_in_8bit": True}],
                                                         [None, 0.25, "test"], [None, "text", "alpaca"], [None, True]))
def test_pruned_code_computes_what_the_code_computes(q, e, f, c):
    known = {"Q": q, "E": e, "F": f, "C": c}
    pruned = prune(CODE, known)
    ast.parse(pruned)
    for x in (0, 1):
        results = []
        for code in (CODE, pruned):
            namespace = dict(known)
            exec(compile(code, "<test>", "exec"), namespace)  # noqa: S102 - the test's own code
            results.append(namespace["f"](x))
        assert results[0] == results[1], pruned
    tests = [ast.unparse(n.test) for n in ast.walk(ast.parse(pruned)) if isinstance(n, (ast.If, ast.IfExp))]
    assert all(name not in test for test in tests for name in ("Q", "E", "F")), pruned  # every such test decided


def test_pruning_keeps_the_taken_branchs_comments_and_leaves_unknown_tests_alone():
    code = "def f():\n    if Q:  # the quantised path\n        # load it quantised\n        return 1\n    return 2\n"

    assert prune(code, {"Q": {"load_in_4bit": True}}) == \
        "def f():\n    # the quantised path\n    # load it quantised\n    return 1\n"
    assert prune(code, {}) == code
    assert prune("if R:\n    x = 1\n", {"R": None}) == "pass\n"  # a block never ends up empty
    kept = "def f():\n    if R:\n        x = 1\n\n        y = '''a\nb'''\n    return x\n"
    assert prune(kept, {"R": 1}) == "def f():\n    x = 1\n\n    y = '''a\nb'''\n    return x\n"


@pytest.mark.parametrize("changes", [{}, {"data": {"eval": 0.25, "columns": {"instruction": "instruction"}}},
                                     {"model": {"quant": "4bit"}, "train": {"gradient_checkpointing": True}}])
def test_every_setting_a_script_carries_is_read_by_its_code(llama, in_tmp, changes):
    """A setting only a left-out branch read goes with it: editing it would change nothing."""
    alpaca_file(in_tmp)
    script = lora_nb.to_script(recipe(llama, **changes))
    code = script.split("# --- end of settings ---", 1)[1]
    read = {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}
    assert set(constants(script)) <= read, set(constants(script)) - read
    assert ("EVAL" in constants(script)) == ("eval" in changes.get("data", {}))
    assert ("COLUMNS" in constants(script)) == ("columns" in changes.get("data", {}))
