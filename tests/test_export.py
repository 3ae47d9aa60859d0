"""lora_nb.to_script(recipe): a standalone script that reproduces lora_nb.run(recipe)'s losses exactly."""

from __future__ import annotations

import ast
import inspect
import json
import os
import runpy
import shutil
import subprocess
import sys

import pytest

import lora_nb
from lora_nb.hf import columns, compat, devices, folders, formats, memory_model, mirror, models, stopping, trackers
from lora_nb.core.errors import ConfigError
from lora_nb.export.script import script_settings


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


def constants(script):
    """The script's module-level NAME = <literal> settings, read with ast.literal_eval (never run)."""
    tree = ast.parse(script)
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def load_script(path):
    """The script's namespace, its module code run as an import would (main() is not called)."""
    return runpy.run_path(str(path), run_name="train_lora")


def run_main(namespace, monkeypatch, *args):
    """Call the script's main() in this process with ``args`` on its command line — in a process that
    has imported ipykernel too, as ``%run train_lora.py --resume …`` in a notebook does."""
    import types

    monkeypatch.setitem(sys.modules, "ipykernel", sys.modules.get("ipykernel") or types.ModuleType("ipykernel"))
    monkeypatch.setattr(sys, "argv", ["train_lora.py", *map(str, args)])
    namespace["main"]()


def without_lora_nb(script, *args):
    """The command that runs ``script`` as ``python script args`` with lora_nb made unimportable
    (an editable install would otherwise let an import of it pass)."""
    shim = ("import runpy, sys; sys.modules['lora_nb'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    return [sys.executable, "-c", shim, str(script), *map(str, args)]


def copy_model(llama, folder):
    shutil.copytree(llama, folder)
    return str(folder)


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
    run = lora_nb.run(recipe)
    script = tmp_path / "train_lora.py"
    script.write_text(lora_nb.to_script(recipe))
    assert "lora_nb" not in imports(script.read_text())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (tmp_path / "elsewhere").mkdir()  # not the repository: nothing of lora_nb on the path
    done = subprocess.run(without_lora_nb(script, "--output-dir", tmp_path / "script"), env=env,
                          cwd=tmp_path / "elsewhere",
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    train, evals = script_losses(tmp_path / "script")
    assert (train, evals) == run_losses(run)
    assert len(train) == 6 and len(evals) == 2
    assert (tmp_path / "script" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.skipif(shutil.which("accelerate") is None
                    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "accelerate")),
                    reason="accelerate's launcher is not on PATH")
def test_script_runs_unchanged_under_accelerate_launch(llama, parity, tmp_path):
    data = write_rows(tmp_path / "train.jsonl", parity[0])
    recipe = recipe_for(llama, data, str(tmp_path / "run"), steps=3)
    run = lora_nb.run(recipe)
    script = tmp_path / "train_lora.py"
    script.write_text(lora_nb.to_script(recipe))
    launcher = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    done = subprocess.run([launcher, "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
                           "--output-dir", str(tmp_path / "acc")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert script_losses(tmp_path / "acc") == run_losses(run)


def test_values_cannot_inject_code(llama, tmp_path):
    nasty = "x'); import os; os.system('touch pwned') #\n\"\"\"\n"
    recipe = lora_nb.Recipe.from_dict({"model": {"name": llama}, "data": {"path": nasty + ".jsonl", "format": "alpaca"},
                                       "lora": {"targets": "attention"}, "train": {"steps": 1}, "output_dir": nasty})
    script = lora_nb.to_script(recipe)
    tree = ast.parse(script)
    constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name) and isinstance(node.value, ast.Constant)}
    assert constants["DATA"] == nasty + ".jsonl" and constants["OUTPUT_DIR"] == nasty + "-script"
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "system"]
    assert not calls


def test_role_targets_are_resolved_into_the_script(tiny, tmp_path):
    recipe = lora_nb.Recipe.from_dict({"model": {"name": str(tiny("gpt2"))}, "data": {"path": "d.jsonl"},
                                       "lora": {"targets": "attention"}, "train": {"steps": 1}})
    settings = constants(lora_nb.to_script(recipe))
    assert settings["LORA_CONFIG"]["target_modules"] == ["attn.c_attn", "attn.c_proj"]  # not mlp.c_proj
    assert settings["MODEL_CLASS"] == "GPT2LMHeadModel"


# --- values reach the script only as literals ------------------------------------------------------

INJECTION = 'm"""\nimport os; os.system("touch PWNED")\n"""'
# quotes, triple quotes, a newline, backslashes, str.format braces and a call; still a valid regex
HOSTILE = 'a\\\'b"c"""\n{x}}{0}{__import__("os").system("touch PWNED")}\\t'


def test_model_folder_name_cannot_inject_code(llama, parity, in_tmp, monkeypatch):
    model = copy_model(llama, in_tmp / INJECTION)  # quotes and newlines are legal in Linux file names
    data = write_rows(in_tmp / "train.jsonl", parity[0][:8])
    recipe = lora_nb.Recipe.from_dict({"model": {"name": model}, "data": {"path": data},
                                       "lora": {"r": 2, "targets": "attention"},
                                       "train": {"steps": 1, "batch_size": 2, "max_length": 32}})
    script = in_tmp / "train_lora.py"
    script.write_text(lora_nb.to_script(recipe))

    done = subprocess.run([sys.executable, str(script), "--help"], cwd=in_tmp, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    namespace = load_script(script)
    assert namespace["MODEL"] == model
    run_main(namespace, monkeypatch, "--output-dir", in_tmp / "out")  # the model loads from that very folder

    assert (in_tmp / "out" / "adapter" / "adapter_model.safetensors").exists()
    assert not (in_tmp / "PWNED").exists()


def test_windows_paths_keep_their_backslashes(llama, tmp_path):
    name = "C:\\Users\\me\\model"  # on Linux, one folder whose name holds backslashes
    model = copy_model(llama, tmp_path / name)
    recipe = lora_nb.Recipe.from_dict({"model": {"name": model}, "data": {"path": "C:\\Users\\me\\data.jsonl"},
                                       "lora": {"targets": "attention"}, "train": {"steps": 1},
                                       "output_dir": "D:\\runs\\new"})

    settings = constants(lora_nb.to_script(recipe))  # ast.parse: no SyntaxError from a \U escape

    assert settings["MODEL"] == model and model.endswith("\\Users\\me\\model")
    assert settings["DATA"] == "C:\\Users\\me\\data.jsonl"
    assert settings["OUTPUT_DIR"] == "D:\\runs\\new-script"


def test_every_setting_reaches_the_script_only_as_a_literal(llama, tmp_path):
    recipe = lora_nb.Recipe.from_dict({
        "model": {"name": copy_model(llama, tmp_path / HOSTILE), "device_map": HOSTILE},
        # a pattern key must match a module (else it is refused): q_proj does, the hostile rest rides along
        "lora": {"targets": "attention", "rank_pattern": {f"q_proj|{HOSTILE}": 4},
                 "alpha_pattern": {f"q_proj|{HOSTILE}": 8},
                 "modules_to_save": [HOSTILE]},
        "data": {"path": HOSTILE, "split": HOSTILE, "eval": HOSTILE, "columns": {"instruction": HOSTILE}},
        "train": {"steps": 1, "resume": HOSTILE, "mirror": HOSTILE, "sft": {"run_name": HOSTILE}},
        "output_dir": HOSTILE,
    })
    script = lora_nb.to_script(recipe)
    tree = ast.parse(script)

    assert HOSTILE not in script  # the raw value (a real newline after triple quotes) never appears
    without_strings = ast.unparse(StripStrings().visit(tree))
    assert "PWNED" not in without_strings and "__import__" not in without_strings
    settings = constants(script)
    shared = (devices, memory_model, models, formats, columns, folders, compat, trackers, stopping, mirror)
    fixed = {name: value for module in shared
             for name, value in constants(inspect.getsource(module)).items()}  # their own constants
    expected = script_settings(recipe)  # a setting only a left-out branch reads is left out of the script
    assert all(expected[name] == value for name, value in settings.items() if name not in fixed)
    assert all(value == fixed[name] for name, value in settings.items() if name in fixed)
    assert (settings["MODEL"], settings["DEVICE_MAP"]) == (recipe.model.name, HOSTILE)
    assert (settings["DATA"], settings["DATA_SPLIT"], settings["EVAL"]) == (HOSTILE, HOSTILE, HOSTILE)
    assert (settings["RESUME"], settings["OUTPUT_DIR"]) == (HOSTILE, HOSTILE + "-script")
    assert settings["SFT_CONFIG"]["run_name"] == HOSTILE
    assert (settings["COLUMNS"], settings["MIRROR"]) == ({"instruction": HOSTILE}, HOSTILE)
    lora = settings["LORA_CONFIG"]
    assert lora["modules_to_save"] == [HOSTILE]
    # a key with repeats or braces reaches PEFT as the module names it matched, escaped (see injection.peft_patterns)
    assert lora["rank_pattern"] == {r"model\.layers\.0\.self_attn\.q_proj|model\.layers\.1\.self_attn\.q_proj": 4}
    assert list(lora["alpha_pattern"]) == list(lora["rank_pattern"])


class StripStrings(ast.NodeTransformer):
    """Empties every string constant, so what remains is the script's code alone."""

    def visit_Constant(self, node):
        return ast.Constant("") if isinstance(node.value, str) else node


def test_a_value_without_a_literal_form_is_refused(llama):
    recipe = lora_nb.Recipe.from_dict({"model": {"name": llama}, "data": {"path": "d.jsonl"},
                                       "lora": {"targets": "attention"}, "train": {"steps": 1}})
    recipe.train.sft = {"callbacks": object()}  # set after validation, as only code can

    with pytest.raises(ConfigError, match="^SFT_CONFIG: cannot be written into a script"):
        lora_nb.to_script(recipe)


# --- the script never overwrites a run; --resume continues one -------------------------------------


def small_recipe(llama, parity, folder, **train):
    data = write_rows(folder / "train.jsonl", parity[0][:16])
    return lora_nb.Recipe.from_dict({"model": {"name": llama}, "data": {"path": data},
                                     "lora": {"r": 2, "targets": "attention"},
                                     "train": {"steps": 1, "batch_size": 2, "max_length": 32, **train},
                                     "output_dir": str(folder / "run")})


def script_namespace(recipe, folder):
    script = folder / "train_lora.py"
    script.write_text(lora_nb.to_script(recipe))
    return load_script(script)


def test_script_writes_a_new_folder_and_refuses_to_overwrite_it(llama, parity, in_tmp, monkeypatch):
    recipe = small_recipe(llama, parity, in_tmp)
    api_run = in_tmp / "run" / "adapter" / "adapter_model.safetensors"  # what lora_nb.run() left there
    api_run.parent.mkdir(parents=True)
    api_run.write_bytes(b"the API run's adapter")
    namespace = script_namespace(recipe, in_tmp)

    run_main(namespace, monkeypatch)
    adapter = in_tmp / "run-script" / "adapter" / "adapter_model.safetensors"
    assert adapter.exists() and api_run.read_bytes() == b"the API run's adapter"
    first = adapter.stat().st_mtime_ns
    with pytest.raises(SystemExit) as info:
        run_main(namespace, monkeypatch)
    message = str(info.value.code)
    assert message.startswith(str(in_tmp / "run-script")) and "\n" not in message
    assert "--output-dir NEW" in message and "--overwrite" in message
    assert adapter.stat().st_mtime_ns == first

    run_main(namespace, monkeypatch, "--overwrite")
    assert adapter.stat().st_mtime_ns > first


def test_output_folder_choices(llama, parity, in_tmp, monkeypatch):
    output_folder = script_namespace(small_recipe(llama, parity, in_tmp), in_tmp)["output_folder"]

    def choose(*args):
        monkeypatch.setattr(sys, "argv", ["train_lora.py", *map(str, args)])
        return output_folder()

    (in_tmp / "empty").mkdir()
    assert choose("--output-dir", in_tmp / "empty") == (str(in_tmp / "empty"), None)  # empty is as good as new
    assert choose("--output-dir", in_tmp, "--overwrite") == (str(in_tmp), None)
    with pytest.raises(SystemExit, match="already holds files"):
        choose("--output-dir", in_tmp)
    with pytest.raises(SystemExit, match="no complete checkpoint to continue from"):
        choose("--resume", in_tmp)
    with pytest.raises(SystemExit) as info:
        choose("--resume", in_tmp, "--output-dir", in_tmp / "other")
    assert info.value.code == 2  # a usage error: --resume writes into the run it continues


def test_resume_continues_from_the_last_complete_checkpoint(llama, parity, in_tmp, monkeypatch):
    recipe = small_recipe(llama, parity, in_tmp, steps=4, sft={"save_steps": 2})
    namespace = script_namespace(recipe, in_tmp)
    run = in_tmp / "first"
    run_main(namespace, monkeypatch, "--output-dir", run)
    whole = script_losses(run)
    torn = run / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    torn.write_text(torn.read_text()[:40])  # killed while saving: checkpoint-4 is incomplete
    kept = {f: f.stat().st_mtime_ns for f in (run / "checkpoints" / "checkpoint-2").iterdir()}
    adapter = (run / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns

    run_main(namespace, monkeypatch, "--resume", run)

    assert {f: f.stat().st_mtime_ns for f in kept} == kept  # read, not trained again from step 0
    assert json.loads(torn.read_text())["global_step"] == 4  # steps 3 and 4 trained again, in the run's folder
    assert script_losses(run) == whole  # with the losses the uninterrupted run logged
    assert (run / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns > adapter


def test_recipe_resume_is_the_script_default(llama, parity, in_tmp, monkeypatch):
    recipe = small_recipe(llama, parity, in_tmp, resume=str(in_tmp / "old"))
    namespace = script_namespace(recipe, in_tmp)

    assert namespace["RESUME"] == str(in_tmp / "old")
    with pytest.raises(SystemExit, match="^--resume .*old: no complete checkpoint"):
        run_main(namespace, monkeypatch)


def test_every_process_checks_the_folder_before_any_writes(llama, parity, in_tmp):
    # torchrun is the launcher accelerate launch uses for several processes; ACCELERATE_USE_CPU
    # makes them one CPU (gloo) run, as accelerate launch --cpu would
    recipe = small_recipe(llama, parity, in_tmp, steps=2)
    script = in_tmp / "train_lora.py"
    script.write_text(lora_nb.to_script(recipe))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}

    def launch():
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               str(script), "--output-dir", "two"], cwd=in_tmp, env=env, capture_output=True, text=True,
                              timeout=300)

    done = launch()
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((in_tmp / "two" / "checkpoints" / "trainer_state.json").read_text())
    assert state["log_history"][-1]["epoch"] == 2 * 2 * 2 / 16  # steps x batch x 2 processes over 16 rows
    before = {p: p.stat().st_mtime_ns for p in (in_tmp / "two").rglob("*")}
    again = launch()
    assert again.returncode != 0
    # the first process to refuse ends the launch: torchrun stops the other, which may not have got as far
    assert "two already holds files: pass --output-dir NEW" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in (in_tmp / "two").rglob("*")} == before  # no process wrote


def test_an_epoch_run_checkpoints_in_the_script_as_in_lora_nb(llama, parity, tmp_path):
    # the save interval is a tenth of the run; for a run given in epochs that needs the row count
    data = write_rows(tmp_path / "train.jsonl", parity[0])  # 48 rows
    recipe = lora_nb.Recipe.from_dict({"model": {"name": llama}, "data": {"path": data},
                                       "train": {"epochs": 2, "batch_size": 4}})
    from lora_nb.training.sft_settings import sft_config_kwargs

    expected = sft_config_kwargs(recipe.train, "", False, 48)  # what train() computes from the prepared rows
    settings = constants(lora_nb.to_script(recipe))["SFT_CONFIG"]
    assert settings["save_steps"] == expected["save_steps"] == 2  # 24 steps / 10
