"""%lora / %%lora in a real IPython shell: each verb, its errors, the extension's cost."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from IPython.core.error import UsageError

import lora_nb
from lora_nb.core.errors import ConfigError


@pytest.fixture
def ip(shell):
    """A fresh InteractiveShell, history off, with the extension loaded."""
    shell.run_line_magic("load_ext", "lora_nb")
    return shell


@pytest.fixture
def data_file(parity, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    return path


def session(ip):
    return ip.magics_manager.registry["LoraMagics"].session


def test_load_ext_is_cheap_and_unload_removes_the_magics():
    code = (
        "import sys, time\n"
        "from IPython.testing.globalipapp import get_ipython\n"
        "ip = get_ipython()\n"
        "t = time.perf_counter(); ip.run_line_magic('load_ext', 'lora_nb'); t = time.perf_counter() - t\n"
        "print('LOADED', t, 'torch' in sys.modules, 'lora' in ip.magics_manager.magics['line'], "
        "'lora' in ip.magics_manager.magics['cell'])\n"
        "ip.run_line_magic('unload_ext', 'lora_nb')\n"
        "print('UNLOADED', 'lora' in ip.magics_manager.magics['line'], 'lora' in ip.magics_manager.magics['cell'])\n"
    )
    stdout = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # IPython 7 writes a terminal-title escape sequence first: read what follows the markers
    out = [stdout.split("LOADED ", 1)[1].split("\n", 1)[0], stdout.split("UNLOADED ", 1)[1].split("\n", 1)[0]]
    seconds, torch_loaded, line, cell = out[0].split()
    print(f"%load_ext lora_nb: {float(seconds) * 1000:.0f} ms")
    assert (torch_loaded, line, cell) == ("False", "True", "True")
    assert out[1] == "False False"


def test_help_runs_and_stop_answer_without_importing_the_libraries():
    code = (
        "import sys\n"
        "from IPython.testing.globalipapp import get_ipython\n"
        "ip = get_ipython()\n"
        "ip.run_line_magic('load_ext', 'lora_nb')\n"
        "for line in ('help', 'help train', 'runs', 'stop'):\n"
        "    try:\n"
        "        ip.run_line_magic('lora', line)\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__)\n"
        "heavy = ('torch', 'transformers', 'datasets', 'peft', 'trl')\n"
        "print('IMPORTED', sorted(m for m in heavy if m in sys.modules))\n"
    )
    stdout = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "%lora VERB" in stdout and "lora train" in stdout  # the answers came
    assert stdout.split("IMPORTED ", 1)[1].split("\n", 1)[0] == "[]"


def test_help_lists_every_verb_with_an_example(ip, capsys):
    ip.run_line_magic("lora", "help")
    out = capsys.readouterr().out
    for verb in ("load", "targets", "inject", "train", "wait", "stop", "generate", "compare", "save", "merge",
                 "export", "runs", "panel", "help"):
        assert f"  {verb} " in out and f"e.g. %lora {verb}" in out
    assert "%lora help VERB" in out


def test_help_for_a_verb_shows_its_flags_settings_and_example(ip, capsys):
    import dataclasses

    from lora_nb.notebook.magics import VERBS
    from lora_nb.recipe.schema import LoraSection, TrainSection

    for verb in VERBS:
        ip.run_line_magic("lora", f"help {verb}")
        out = capsys.readouterr().out
        assert out.startswith(f"%lora {verb} — ") and "\nexample: %" in out, verb
    ip.run_line_magic("lora", "help train")
    train = capsys.readouterr().out
    for flag in ("--fresh", "--resume RUN_DIR", "--background", "--overwrite"):
        assert flag in train
    for f in dataclasses.fields(TrainSection):  # every key, its default, the start of its help
        assert re.search(rf"^  {f.name} +\S+ +{re.escape(f.metadata['help'][:25])}", train, re.M), f.name
    for key, default in (("steps", "null"), ("lr", "0.0002"), ("scheduler", "cosine"), ("batch_size", "4"),
                         ("packing", "false"), ("data", "required"), ("eval", "null")):
        assert re.search(rf"^  {key} +{default} ", train, re.M), key
    assert "One of: linear, cosine" in train
    for verb in ("save", "merge", "export"):  # one name for the flag, as the API's overwrite=; --force is not shown
        ip.run_line_magic("lora", f"help {verb}")
        out = capsys.readouterr().out
        assert "--overwrite" in out and "--force" not in out, verb
    ip.run_line_magic("lora", "train --help")
    assert capsys.readouterr().out == train
    ip.run_line_magic("lora", "help inject")
    inject = capsys.readouterr().out
    assert all(re.search(rf"^  {f.name} ", inject, re.M) for f in dataclasses.fields(LoraSection))
    assert re.search(r"^  r +16 +Rank of the update", inject, re.M)
    with pytest.raises(UsageError, match=r"no verb 'trian'.*Did you mean 'train'"):
        ip.run_line_magic("lora", "help trian")


@pytest.mark.parametrize("line, words", [
    ("lod x", ["no verb 'lod'", "Did you mean 'load'?"]),
    ("load", ["%lora load", "required: model"]),
    ("load m --5bit", ["unrecognized arguments: --5bit"]),
    ("inject r=8", ["no model loaded yet", "%lora load"]),
    ('generate "unclosed', ["cannot read the arguments"]),
    ("train data=x.jsonl --resume", ["%lora train: argument --resume: expected one argument", "Usage: %lora train"]),
    ("inject r=4 r=8", ["r: given twice (r=4 and r=8): keep one"]),
    ("train data=a.jsonl steps=3 data=b.jsonl", ["data: given twice"]),
])
def test_usage_errors_name_the_problem(ip, line, words):
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("lora", line)
    assert type(err.value) is UsageError  # exactly UsageError: IPython then hides the traceback
    for word in words:
        assert word in str(err.value)


def test_the_whole_flow_with_magics(ip, llama, data_file, tmp_path, in_tmp, capsys):
    ip.run_line_magic("lora", f"load {llama} --4bit")
    table = ip.run_line_magic("lora", "targets --r 4")
    assert "attention" in table.roles and all(m.kind == "Linear4bit" for m in table.modules if m.role == "mlp")
    with pytest.raises(UsageError, match=r"lora.targets.*Did you mean 'attention'"):
        ip.run_line_magic("lora", "inject targets=atention")
    with pytest.raises(UsageError, match=r"rnak: unknown setting.*Did you mean 'r'"):
        ip.run_line_magic("lora", "inject rnak=8")
    ip.run_line_magic("lora", "inject r=4 alpha=8 targets=attention")
    assert "LoRA adapter: " in capsys.readouterr().out
    run = ip.run_line_magic("lora", f"train data={data_file} steps=3 lr=2e-3 batch_size=8 "
                                    f"output_dir={tmp_path / 'run'}")
    assert run.status == "finished" and run.step == 3 and run.recipe.train.lr == 0.002
    result = ip.run_line_magic("lora", f"eval data={data_file} limit=8 metric=contains")
    assert result.n == 8 and result.metric == "contains" and 0 <= result.score <= 1
    assert json.loads((tmp_path / "run" / "evals.jsonl").read_text().splitlines()[-1])["score"] == result.score
    with pytest.raises(UsageError, match=r"metric.*Did you mean 'exact_match'"):
        ip.run_line_magic("lora", f"eval data={data_file} metric=exact")
    with pytest.raises(UsageError, match="needs data=PATH"):
        ip.run_line_magic("lora", "eval limit=3")
    ip.run_cell_magic("lora", "generate --max-new-tokens 3", "Even or odd?\n\n12\n")
    result = ip.run_cell_magic("lora", "compare --max-new-tokens 3", "Even or odd?\n\n12")
    assert result.rows[0][0] == "Even or odd?\n\n12"  # the cell body is the prompt, verbatim
    assert "embedded demo model is untrained" in str(result).splitlines()[0] and "untrained" in result._repr_html_()
    ip.run_line_magic("lora", f"save {tmp_path / 'adapter'}")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    ip.run_line_magic("lora", f"merge {tmp_path / 'merged'}")
    assert (tmp_path / "merged" / "model.safetensors").exists()
    script = ip.run_line_magic("lora", "export")
    assert "LoraConfig" in script.data and "import lora_nb" not in script.data
    ip.run_line_magic("lora", f"export {tmp_path / 'train_lora.py'}")
    assert (tmp_path / "train_lora.py").read_text() == script.data
    runs = ip.run_line_magic("lora", "runs")
    assert [r[0] for r in runs.rows()] == ["run"] and "<img" in runs._repr_html_()


def test_values_from_the_notebook_namespace(ip, llama, parity, tmp_path):
    ip.user_ns["rows"] = parity[0]
    ip.user_ns["picked"] = ["q_proj", "v_proj"]
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4 targets=picked")
    assert session(ip).lora_section.targets == ["q_proj", "v_proj"]
    run = ip.run_line_magic("lora", f"train data=rows steps=2 batch_size=8 output_dir={tmp_path / 'run'}")
    assert run.status == "finished" and (run.dir / "train.jsonl").exists()


def test_cell_bodies_are_yaml_sections(ip, llama, data_file, tmp_path):
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_cell_magic("lora", "inject", "r: 4\nalpha: 8\ntargets: mlp\nvariant: rslora\n")
    assert session(ip).model.peft_config["default"].use_rslora
    run = ip.run_cell_magic("lora", "train", f"data: {{path: {data_file}, eval: 0.25}}\n"
                                             "train: {steps: 2, batch_size: 8}\n"
                                             f"output_dir: {tmp_path / 'run'}\n")
    assert run.status == "finished" and any("eval_loss" in h for h in run.history)
    with pytest.raises(UsageError, match=r"stesp: unknown setting.*Did you mean 'steps'"):
        ip.run_cell_magic("lora", "train", f"data: {data_file}\nstesp: 2\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        ip.run_cell_magic("lora", "inject", "r: [8\n")


def test_a_bare_cell_is_a_whole_recipe(ip, llama, data_file, tmp_path, capsys):
    run = ip.run_cell_magic("lora", "", f"""
model: {{name: {llama}, quant: 4bit}}
lora: {{r: 4, targets: attention}}
data: {{path: {data_file}}}
train: {{steps: 2, batch_size: 8}}
output_dir: {tmp_path / 'run'}
""")
    assert run.status == "finished" and run.recipe.model.quant == "4bit"
    assert session(ip).runs == [run]
    assert capsys.readouterr().out.startswith("fresh adapter (a recipe always starts one): "
                                              "r=4, alpha=32, targets=attention\n")
    with pytest.raises(UsageError, match=r"lora.rank: unknown key.*Did you mean 'r'"):
        ip.run_cell_magic("lora", "", f"model: {{name: {llama}}}\nlora: {{rank: 4}}\n")


def test_library_names_in_lines_and_cells(ip, llama, data_file, tmp_path):
    """transformers'/PEFT's/TRL's names work in %lora key=value and %%lora cells as lora_nb's keys do."""
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4 lora_alpha=8 lora_dropout=0 target_modules=attention use_rslora=true")
    assert (session(ip).lora_section.alpha, session(ip).lora_section.dropout) == (8, 0)
    assert session(ip).lora_section.variant == "rslora" and session(ip).lora_section.targets == "attention"
    with pytest.raises(UsageError, match=r"^alpha: given twice, as alpha=8 and lora_alpha=16: keep one"):
        ip.run_line_magic("lora", "inject alpha=8 lora_alpha=16")
    with pytest.raises(UsageError, match=r"learning_rte: unknown setting.*Did you mean 'lr' \(learning_rate in"):
        ip.run_line_magic("lora", f"train data={data_file} learning_rte=1e-3")
    run = ip.run_line_magic("lora", f"train data={data_file} max_steps=2 learning_rate=2e-3 "
                                    f"per_device_train_batch_size=8 warmup_ratio=0.5 output_dir={tmp_path / 'line'}")
    assert run.status == "finished" and run.step == 2
    assert (run.recipe.train.lr, run.recipe.train.batch_size, run.recipe.train.warmup) == (2e-3, 8, 0.5)
    ip.run_cell_magic("lora", "inject", "r: 4\nlora_alpha: 16\nuse_dora: true\n")
    assert session(ip).model.peft_config["default"].use_dora and session(ip).lora_section.alpha == 16
    body = (f"data: {data_file}\ntrain: {{max_steps: 2, gradient_accumulation_steps: 2}}\n"
            f"output_dir: {tmp_path / 'cell'}\n")
    run = ip.run_cell_magic("lora", "train", body)
    assert run.status == "finished" and run.step == 2 and run.recipe.train.grad_accum == 2
    run = ip.run_cell_magic("lora", "", f"""
model: {{model_name_or_path: {llama}, torch_dtype: float32}}
lora: {{r: 4, target_modules: [q_proj, v_proj]}}
data: {{dataset_name: {data_file}}}
train: {{max_steps: 1, per_device_train_batch_size: 8, lr_scheduler_type: constant}}
output_dir: {tmp_path / 'recipe'}
""")
    assert run.status == "finished" and run.recipe.model.dtype == "fp32" and run.recipe.train.scheduler == "constant"
    assert run.recipe.lora.targets == ["q_proj", "v_proj"]


def test_background_training_refuses_a_second_run_and_stops(ip, llama, data_file, tmp_path):
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4")
    ip.run_line_magic("lora", f"train data={data_file} steps=100000 batch_size=4 output_dir={tmp_path / 'bg'} "
                              "--background")
    run = session(ip).active
    assert run is not None and run.running
    with pytest.raises(UsageError, match="still training in the background"):
        ip.run_line_magic("lora", f"train data={data_file} steps=2")
    ip.run_line_magic("lora", "stop")
    finished = ip.run_line_magic("lora", "wait")
    assert finished is run and run.status == "stopped" and (run.adapter_dir / "adapter_model.safetensors").exists()
    with pytest.raises(UsageError, match="no run is training"):
        ip.run_line_magic("lora", "stop")


def test_export_before_any_run_says_what_is_missing(ip, llama):
    ip.run_line_magic("lora", f"load {llama}")
    with pytest.raises(UsageError, match="needs training data"):
        ip.run_line_magic("lora", "export")


def test_mistakes_are_one_line_usage_errors(ip, llama, data_file, tmp_path):
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "torn\n')
    for line, words in [(f"train data={bad} steps=1", ["data.path", "line 2", "not valid JSON"]),
                        (f"train data={data_file} eval=0.99 steps=1", ["data.eval"]),
                        (f"train data={data_file} max_length=1 steps=1", ["train.max_length", "raise max_length"]),
                        (f"train data={data_file} lr=.inf steps=1", ["train.lr"])]:
        with pytest.raises(UsageError) as err:
            ip.run_line_magic("lora", line + f" output_dir={tmp_path / 'run'}")
        assert type(err.value) is UsageError and all(w in str(err.value) for w in words), str(err.value)
        assert not (tmp_path / "run").exists()


def test_magics_never_overwrite_unless_forced(ip, llama, data_file, tmp_path):
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4")
    run = ip.run_line_magic("lora", f"train data={data_file} steps=2 batch_size=8 output_dir={tmp_path / 'run'}")
    with pytest.raises(UsageError, match=r"output_dir: the folder is not empty.*--overwrite \(or --resume DIR\)"):
        ip.run_line_magic("lora", f"train data={data_file} steps=2 batch_size=8 output_dir={run.dir}")
    again = ip.run_line_magic("lora", f"train data={data_file} steps=2 batch_size=8 output_dir={run.dir} --overwrite")
    assert again.status == "finished" and [h["step"] for h in again.history] == [1, 2]
    resumed = ip.run_line_magic("lora", f"train data={data_file} steps=4 batch_size=8 --resume {run.dir}")
    assert resumed.dir == run.dir and resumed.step == 4 and [h["step"] for h in resumed.history] == [1, 2, 3, 4]
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    for line in (f"save {tmp_path}", f"merge {tmp_path}", f"export {mine}"):
        with pytest.raises(UsageError, match=r"(not empty|file exists).*--overwrite"):
            ip.run_line_magic("lora", line)
    assert mine.read_text() == "mine"
    ip.run_line_magic("lora", f"export {mine} --overwrite")
    assert "LoraConfig" in mine.read_text()
    mine.write_text("mine")
    ip.run_line_magic("lora", f"export {mine} --force")  # the flag's old name, still accepted
    assert "LoraConfig" in mine.read_text()


def test_yaml_aliases_in_a_cell_are_refused(ip, llama):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefg", "bcdefgh"))
    with pytest.raises(UsageError, match="anchors/aliases"):
        ip.run_cell_magic("lora", "", f"model: {{name: {llama}}}\n" + laughs)
    with pytest.raises(UsageError, match="anchors/aliases"):
        ip.run_cell_magic("lora", "inject", "r: &r 8\nalpha: *r\n")


def test_typed_paths_expand_home_and_variables(ip, llama, data_file, tmp_path, monkeypatch):
    import lora_nb

    home = tmp_path / "home"
    shutil.copytree(llama, home / "models" / "m")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LORA_NB_DATA", str(data_file.parent))
    ip.run_line_magic("lora", "load ~/models/m")
    assert session(ip).model_section.name == str(home / "models" / "m")
    assert ip.run_line_magic("lora", "targets ~/models/m").source == "~/models/m"
    ip.run_line_magic("lora", "inject r=4")
    run = ip.run_line_magic("lora", "train data=$LORA_NB_DATA/train.jsonl eval=$LORA_NB_DATA/train.jsonl "
                                    "steps=2 batch_size=8 output_dir=~/runs/a")
    assert run.dir == home / "runs" / "a" and run.recipe.data.path == str(data_file)
    assert run.recipe.data.eval == str(data_file)
    resumed = ip.run_line_magic("lora", "train data=$LORA_NB_DATA/train.jsonl steps=3 batch_size=8 --resume ~/runs/a")
    assert resumed.dir == run.dir and resumed.step == 3
    ip.run_line_magic("lora", "save ~/adapter")
    ip.run_line_magic("lora", "export ~/train_lora.py")
    assert (home / "adapter" / "adapter_model.safetensors").exists() and (home / "train_lora.py").exists()
    model = lora_nb.load_adapter("~/models/m", "~/adapter")
    assert hasattr(model, "peft_config")
    assert (lora_nb.merge("~/adapter", "~/merged") == home / "merged"
            and (home / "merged" / "model.safetensors").exists())
    assert len(lora_nb.data.prepare.read("$LORA_NB_DATA/train.jsonl")) == len(lora_nb.data.prepare.read(str(data_file)))


def test_train_continues_the_adapter_unless_fresh(ip, llama, data_file, tmp_path, capsys):
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4 alpha=8 targets=attention")
    injected = session(ip).model
    capsys.readouterr()
    train = f"train data={data_file} steps=1 batch_size=8"
    first = ip.run_line_magic("lora", f"{train} output_dir={tmp_path / 'one'}")
    assert capsys.readouterr().out.splitlines()[0] == (
        "continuing the adapter injected with r=4, alpha=8, targets=attention (not trained yet)")
    ip.run_line_magic("lora", f"{train} output_dir={tmp_path / 'two'}")
    assert capsys.readouterr().out.splitlines()[0] == f"continuing the adapter of run {first.name} (step 1)"
    assert session(ip).model is injected  # the same adapter, trained further
    fresh = ip.run_line_magic("lora", f"{train} output_dir={tmp_path / 'three'} --fresh")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "fresh adapter: r=4, alpha=8, targets=attention" and "Replacing the adapter" in out[1]
    assert session(ip).model is not injected and fresh.recipe.lora.r == 4 and fresh.recipe.lora.targets == "attention"
    with pytest.raises(UsageError, match="not allowed with argument"):
        ip.run_line_magic("lora", f"{train} --fresh --resume {tmp_path / 'one'}")


def test_runs_lists_this_kernels_runs_and_the_runs_folder(ip, llama, parity, data_file, in_tmp, capsys):
    import lora_nb

    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4")
    mine = ip.run_line_magic("lora", f"train data={data_file} steps=1 batch_size=8")
    model, tok = lora_nb.load(llama)  # a run of "another kernel": only its folder is known to this session
    other = lora_nb.train(lora_nb.inject(model, r=8, targets="attention", verbose=False), tok, parity[0], steps=1,
                          batch_size=8, progress=False)
    table = ip.run_line_magic("lora", "runs")
    assert [row[0] for row in table.rows()] == [other.name, mine.name] and table.runs[1] is mine
    assert [row[2] for row in table.rows()] == ["r8-attention-lr2e-4", "r4-all-linear-lr2e-4"]
    capsys.readouterr()
    assert [r.name for r in ip.run_line_magic("lora", "runs --limit 1").runs] == [other.name]
    assert "the newest 1 of 2 runs" in capsys.readouterr().out
    assert [r.name for r in ip.run_line_magic("lora", 'runs --filter "r=4 status=finished"').runs] == [mine.name]
    assert ip.run_line_magic("lora", f"runs --dir {in_tmp / 'elsewhere'}").runs == [mine]
    with pytest.raises(UsageError, match=r"filter: is not a run setting.*Did you mean 'r'"):
        ip.run_line_magic("lora", "runs --filter rr=4")
    with pytest.raises(UsageError, match="--limit"):
        ip.run_line_magic("lora", "runs --limit 0")


def test_sweep_magic_trains_each_point_on_the_loaded_base(ip, llama, data_file, tmp_path, capsys):
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4 targets=attention")
    with pytest.raises(UsageError, match=r"rr: unknown setting.*Did you mean 'r'"):
        ip.run_line_magic("lora", "sweep rr=2,4")
    with pytest.raises(UsageError, match="needs training data"):
        ip.run_line_magic("lora", "sweep r=2,4 steps=2")
    s = ip.run_line_magic("lora", f"sweep r=2,4 targets=[q_proj,v_proj] steps=2 batch_size=8 data={data_file} "
                                  f"output_dir={tmp_path / 'sweep'}")
    assert [p.settings["r"] for p in s.points] == [2, 4] and all(p.status == "finished" for p in s.points)
    assert all(p.recipe.lora.targets == ["q_proj", "v_proj"] for p in s.points)  # a list value is one value
    assert (tmp_path / "sweep" / "sweep.json").exists() and "sweep finished: 2/2" in capsys.readouterr().out
    sess = session(ip)
    assert sess.runs[-1] is s.points[-1].run and sess.model is s.model  # the session carries the last adapter
    # the last run's recipe
    again = ip.run_line_magic("lora", f"sweep lr=1e-3,2e-3 steps=2 output_dir={tmp_path / 'sweep2'}")
    assert [p.recipe.train.lr for p in again.points] == [1e-3, 2e-3] and again.points[0].recipe.lora.r == 4


def test_train_says_its_lints_as_lines(ip, llama, data_file, tmp_path, capsys):
    from lora_nb.training import lints

    lints._shown.clear()
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4 alpha=2")
    ip.run_line_magic("lora", f"train data={data_file} steps=1 batch_size=4 max_length=64 "
                              f"output_dir={tmp_path / 'run'}")
    out, err = capsys.readouterr()
    assert "note: lora.alpha 2 is below lora.r 4" in out and "note: data.eval is not set" in out and "note:" not in err


def test_a_key_given_twice_in_a_cell_or_recipe_is_refused(ip, llama, tmp_path):
    with pytest.raises(UsageError, match=r"gives r twice \(lines 1 and 2\).*keep one"):
        ip.run_cell_magic("lora", "inject", "r: 4\nr: 8\n")
    with pytest.raises(UsageError, match=r"gives lora.r twice \(lines 3 and 4\)"):
        ip.run_cell_magic("lora", "", f"model: {{name: {llama}}}\nlora:\n  r: 4\n  r: 8\ndata: {{path: x.jsonl}}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: {llama}}}\ntrain:\n  sft: {{weight_decay: 0.1, weight_decay: 0.0}}\n")
    with pytest.raises(ConfigError, match=r"gives train.sft.weight_decay twice"):
        lora_nb.Recipe.from_yaml(recipe)


def test_flags_go_anywhere_among_the_settings(ip, llama, data_file, tmp_path):
    ip.run_line_magic("lora", f"load {llama} --dtype fp32")
    ip.run_line_magic("lora", "inject r=2")
    out = tmp_path / "run"
    ip.run_line_magic("lora", f"train data={data_file} --background steps=2 output_dir={out}")
    run = ip.run_line_magic("lora", "wait")
    assert run.status == "finished" and run.dir == out and (out / "run.json").is_file()


def test_train_reports_to_the_trackers_named_on_the_line(ip, llama, data_file, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4 targets=attention")
    with pytest.raises(UsageError, match=r"^train.report_to: 'mlflow' is not installed; pip install mlflow.$"):
        ip.run_line_magic("lora", f"train data={data_file} steps=1 report_to=mlflow output_dir={tmp_path / 'no'}")
    assert not (tmp_path / "no").exists()
    if real("tensorboard") is None:
        pytest.skip("tensorboard is not installed")
    run = ip.run_line_magic("lora", f"train data={data_file} steps=2 batch_size=8 report_to=tensorboard,tensorboard "
                                    f"output_dir={tmp_path / 'tb'}")
    assert run.recipe.train.report_to == "tensorboard" and list((run.dir / "tensorboard").glob("events.out.*"))
    assert f"reporting to tensorboard ({run.dir / 'tensorboard'})" in capsys.readouterr().out


def test_train_maps_the_datas_own_columns(ip, llama, parity, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": r["input"], "answer": r["output"]}) + "\n" for r in parity[0]))
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=2")
    with pytest.raises(UsageError, match=r"cannot be read as any format; set data.columns: "
                                         r"\{instruction: question, output: answer\} "
                                         r"\(%lora train columns=question:instruction,answer:output\)"):
        ip.run_line_magic("lora", f"train data={data} steps=1")
    with pytest.raises(UsageError, match="data.columns: 'questoin' is not a column; the data has: question, answer"):
        ip.run_line_magic("lora", f"train data={data} steps=1 columns=questoin:instruction,answer:output")
    run = ip.run_line_magic("lora", f"train data={data} columns=question:instruction,answer:output steps=2 "
                                    f"batch_size=8 output_dir={tmp_path / 'line'}")
    assert run.status == "finished" and run.recipe.data.columns == {"question": "instruction", "answer": "output"}
    cell = (f"data: {{path: {data}, columns: {{instruction: question, output: answer}}}}\n"
            f"train: {{steps: 2, batch_size: 8}}\noutput_dir: {tmp_path / 'cell'}\n")
    run = ip.run_cell_magic("lora", "train", cell)
    assert run.status == "finished" and run.recipe.data.columns == {"instruction": "question", "output": "answer"}
    sweep = ip.run_line_magic("lora", f"sweep r=2,4 data={data} columns=question:instruction,answer:output steps=1 "
                                      f"batch_size=8 eval_data={data} metric=token_accuracy "
                                      f"output_dir={tmp_path / 'sweep'}")  # its commas are not grid values
    assert [p.settings["r"] for p in sweep.points] == [2, 4] and all(p.status == "finished" for p in sweep.points)
    assert all(p.recipe.data.columns == {"question": "instruction", "answer": "output"} for p in sweep.points)
    assert all(0 <= p.score <= 1 for p in sweep.points)  # the eval rows were read with the same mapping
    scored = ip.run_line_magic("lora", f"eval data={data} columns=question:instruction,answer:output "
                                       "metric=token_accuracy limit=8")
    assert scored.score == lora_nb.evaluate(sweep.model, session(ip).tokenizer, [
        {"instruction": r["input"], "output": r["output"]} for r in parity[0][:8]], metric="token_accuracy").score


def test_train_with_early_stopping_as_a_number_or_a_mapping(ip, llama, data_file, tmp_path, capsys):
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4")
    train = (f"train data={data_file} steps=30 lr=1e-2 scheduler=constant batch_size=4 max_length=64 eval=0.25 "
             "eval_steps=2")
    run = ip.run_line_magic("lora", f"{train} output_dir={tmp_path / 'one'} "
                                    "early_stopping='{patience: 2, min_delta: 10}'")
    assert run.stopped_early == "stopped early at step 6 (eval_loss did not improve for 2 evals)" and run.step == 6
    assert "stopped early at step 6 (eval_loss did not improve for 2 evals); best eval_loss" in capsys.readouterr().out
    assert run.recipe.train.early_stopping == {"patience": 2, "metric": "eval_loss", "min_delta": 10.0}
    with pytest.raises(UsageError, match=r"data.eval: is needed by train.early_stopping"):
        ip.run_line_magic("lora", f"train data={data_file} steps=2 early_stopping=3 output_dir={tmp_path / 'two'}")
    with pytest.raises(UsageError, match=r"train.early_stopping.patience: must be a positive whole number"):
        ip.run_line_magic("lora", f"{train} early_stopping=0 output_dir={tmp_path / 'three'}")


def test_data_check_shows_the_loss_mask_and_takes_train_on(ip, llama, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                          {"role": "user", "content": "and?"}, {"role": "assistant", "content": "done"}]}]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ip.run_line_magic("lora", f"load {llama}")
    report = ip.run_line_magic("lora", f"data check data={path} train_on=last_turn rows=1")
    assert report.train_on == "last_turn" and "".join(report.trained_tokens(0)) == "done<|end|>"
    every = ip.run_line_magic("lora", f"data check data={path} train_on=all")
    assert every.rows[0]["trained"] == every.rows[0]["total"]
    with pytest.raises(UsageError, match=r"data.train_on.*Did you mean 'assistant'"):
        ip.run_line_magic("lora", f"data check data={path} train_on=asistant")
    with pytest.raises(UsageError, match=r"needs data=PATH"):
        ip.run_line_magic("lora", "data check")
    with pytest.raises(UsageError, match=r"invalid choice"):
        ip.run_line_magic("lora", f"data show data={path}")


def test_compare_runs_magic_answers_with_each_runs_adapter(ip, llama, data_file, in_tmp):
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4")
    for name, lr in (("a", 5e-2), ("b", 1e-2)):
        ip.run_line_magic("lora", f"train data={data_file} steps=2 lr={lr} batch_size=4 max_length=64 "
                                  f"output_dir=runs/{name} --fresh")
    active = session(ip).model.active_adapter
    result = ip.run_line_magic("lora", 'compare --max-new-tokens 4 --runs runs/a b "Even or odd? 7"')
    assert result.headers == ["prompt", "base", "a", "b"] and result.rows[0][0] == "Even or odd? 7"
    alone = lora_nb.load_adapter(llama, "runs/b/adapter")
    assert result.rows[0][3] == lora_nb.generate(alone, session(ip).tokenizer, "Even or odd? 7", max_new_tokens=4)
    cell = ip.run_cell_magic("lora", "compare --runs a --max-new-tokens 4", "Even or odd?\n\n7")
    assert cell.headers == ["prompt", "base", "a"] and cell.rows[0][0] == "Even or odd?\n\n7"
    assert session(ip).model.active_adapter == active and list(session(ip).model.peft_config) == [active]
    assert ip.run_line_magic("lora", 'compare --max-new-tokens 4 "Even or odd? 7"').headers[-1] == "adapter"
    with pytest.raises(UsageError, match="name the runs, then the prompt"):
        ip.run_line_magic("lora", "compare --runs a")
    with pytest.raises(UsageError, match="runs: nowhere"):
        ip.run_line_magic("lora", 'compare --runs nowhere "hi"')


def test_push_dry_run_of_the_last_run_or_a_named_one(ip, llama, data_file, tmp_path, capsys):
    with pytest.raises(UsageError, match=r"no run in this session yet"):
        ip.run_line_magic("lora", "push me/x --dry-run")
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4")
    run = ip.run_line_magic("lora", f"train data={data_file} steps=2 batch_size=8 max_length=64 "
                                    f"output_dir={tmp_path / 'run'}")
    capsys.readouterr()
    ip.run_line_magic("lora", "push me/x --dry-run")
    out = capsys.readouterr().out
    assert out.startswith("dry run:") and "files for me/x" in out
    ip.run_line_magic("lora", f"push me/y --dry-run run={run.dir}")
    assert "files for me/y" in capsys.readouterr().out
    with pytest.raises(UsageError, match=r"unrecognized arguments|the following arguments are required"):
        ip.run_line_magic("lora", "push --dry-run")


def test_resume_magic_continues_a_stopped_run_and_the_session_takes_its_model(ip, llama, data_file, in_tmp, capsys):
    from transformers import TrainerCallback

    class StopAtTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:  # as Stop does: stop after a save
                control.should_training_stop = control.should_save = True

    ip.run_line_magic("lora", "resume")
    assert capsys.readouterr().out == ("nothing to resume: no killed, interrupted or stopped run with a checkpoint "
                                       "in runs\n")
    recipe = lora_nb.Recipe.from_dict({"model": {"name": llama}, "lora": {"r": 4}, "data": {"path": str(data_file)},
                                       "train": {"steps": 4, "batch_size": 8, "max_length": 64}})
    stopped = lora_nb.run(recipe, callbacks=[StopAtTwo()], progress=False)
    assert lora_nb.Run.load(stopped.dir).status == "stopped" and session(ip).model is None
    capsys.readouterr()
    run = ip.run_line_magic("lora", "resume")
    assert capsys.readouterr().out.startswith(f"resuming runs/{stopped.name} (stopped at step 2 of 4, from its "
                                              "checkpoint of step 2)\n")
    assert run.dir == stopped.dir and run.status == "finished" and run.step == 4
    assert [h["step"] for h in lora_nb.Run.load(run.dir).history if "loss" in h] == [1, 2, 3, 4]
    assert session(ip).runs[-1] is run and hasattr(session(ip).model, "peft_config")
    assert session(ip).lora_section.r == 4
    with pytest.raises(UsageError, match="one run at most"):
        ip.run_line_magic("lora", "resume a b")


def test_train_mirrors_the_run_folder(ip, llama, data_file, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_NB_MIRROR", str(tmp_path / "drive"))
    ip.run_line_magic("lora", f"load {llama}")
    ip.run_line_magic("lora", "inject r=4")
    run = ip.run_line_magic("lora", f"train data={data_file} steps=2 batch_size=8 max_length=64 "
                                    f"output_dir={tmp_path / 'run'} mirror=$LORA_NB_MIRROR")
    copy = tmp_path / "drive" / "run"
    assert run.mirror == str(tmp_path / "drive") and run.recipe.train.mirror == str(tmp_path / "drive")
    assert (copy / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (run.dir / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(UsageError, match=r"^train.mirror: .*not a folder"):
        ip.run_line_magic("lora", f"train data={data_file} steps=1 mirror={data_file} output_dir={tmp_path / 'no'}")
