"""lora_nb.experiments.sweeps: one recipe over a grid, each point a fresh adapter on one loaded base, each a normal
run."""

from __future__ import annotations

import ast
import json
import os
import signal
import statistics
import subprocess

import pytest
from test_export import HOSTILE, StripStrings, constants, imports, script_losses, without_lora_nb
from test_portable import undefined_names

import lora_nb
from lora_nb.training.callbacks import RunCallback
from lora_nb.core.errors import ConfigError
from lora_nb.runs.record import Run
from lora_nb.experiments.sweeps.ranking import Spread
from lora_nb.experiments.sweeps.sweep import Sweep, sweep


@pytest.fixture(scope="module")
def data(parity, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    return str(path)


def recipe(model, data, quant=None, steps=3, **lora):
    return lora_nb.Recipe.from_dict({
        "model": {"name": model, "quant": quant},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention", **lora},
        "data": {"path": data},
        # a checkpoint only at the end: the points are short, saving each step would be most of their time
        "train": {"steps": steps, "batch_size": 4, "max_length": 64, "lr": 1e-3, "warmup": 0,
                  "sft": {"save_steps": 100}},
    })


def losses(run):
    return [(h["step"], h["loss"]) for h in run.history if "loss" in h]


@pytest.fixture(scope="module")
def grid(llama, data, parity, tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid") / "sweep"
    return sweep(recipe(llama, data), r=[2, 4], targets=["attention", "mlp"], eval_data=parity[1],
                 metric="token_accuracy", output_dir=str(folder), progress=False)


def test_each_point_is_a_normal_run_in_the_sweeps_folder(grid):
    labels = ["r2-attention-s0", "r2-mlp-s0", "r4-attention-s0", "r4-mlp-s0"]
    assert [p.label for p in grid.points] == labels
    assert sorted(f.name for f in grid.dir.iterdir()) == ["loss.png", *labels, "sweep.json"]
    for point in grid.points:
        run = Run.load(grid.dir / point.label)
        assert (run.status, run.step, run.recipe.lora.r, run.recipe.lora.targets) == \
               ("finished", 3, point.settings["r"], point.settings["targets"])
        assert (run.dir / "adapter" / "adapter_model.safetensors").exists()
        assert run.eval_score == point.score  # evaluate(run=...) recorded it in the run's evals.jsonl
    record = json.loads((grid.dir / "sweep.json").read_text())
    assert record["status"] == "finished" and record["grid"] == {"r": [2, 4], "targets": ["attention", "mlp"]}
    assert [(p["label"], p["status"]) for p in record["points"]] == [(label, "finished") for label in labels]


def test_the_table_has_a_row_per_point_and_marks_the_best(grid):
    rows = grid.table()
    assert len(rows) == 4
    assert list(rows[0]) == ["best", "r", "targets", "status", "final loss", "eval score", "tokens/s",
                             "trainable params", "peak MiB"]  # no eval loss: the recipe holds no eval split
    best = max(range(4), key=lambda i: rows[i]["eval score"])
    assert [row["best"] for row in rows] == ["★" if i == best else "" for i in range(4)]
    assert grid.best is grid.points[best]
    assert rows[0]["trainable params"] < rows[2]["trainable params"]  # r2 < r4, attention
    assert all(row["final loss"] == grid.points[i].run.last("loss") for i, row in enumerate(rows))
    assert "★" in str(grid) and "<img src='data:image/png;base64," in grid._repr_html_()
    assert Sweep.load(grid.dir).table() == rows  # sweep.json and the run folders say the same


def test_seeds_are_grouped_into_mean_and_spread(llama, data, tmp_path):
    s = sweep(recipe(llama, data, steps=2), lr=[1e-3, 3e-3], seeds=2, output_dir=str(tmp_path / "seeds"),
              progress=False)

    # seeds outermost: a stopped sweep has covered the grid once before it repeats one
    assert [(p.label, p.seed) for p in s.points] == [("lr1e-3-s0", 42), ("lr3e-3-s0", 42), ("lr1e-3-s1", 43),
                                                     ("lr3e-3-s1", 43)]
    assert [Run.load(s.dir / p.label).recipe.train.seed for p in s.points] == [42, 42, 43, 43]
    rows = s.table()
    assert [(row["lr"], row["seeds"]) for row in rows] == [(1e-3, 2), (3e-3, 2)]
    finals = [p.run.last("loss") for p in s.points[0::2]]
    assert rows[0]["final loss"] == Spread(statistics.fmean(finals), statistics.stdev(finals))
    assert rows[0]["final loss"].spread > 0  # another seed: another data order and adapter
    assert " ± " in str(s) and sum(row["best"] == "★" for row in rows) == 1


@pytest.mark.parametrize("family, quant, bias", [("llama", "4bit", "none"), ("gpt2", None, "all")])
def test_every_point_starts_from_the_base_as_loaded(tiny, data, tmp_path, family, quant, bias):
    model, tok = lora_nb.load(str(tiny(family)), quant=quant)
    weights = {name: (p, p.detach().clone()) for name, p in model.named_parameters() if not name.endswith("bias")}
    r = recipe(str(tiny(family)), data, quant=quant, steps=2, targets="attention", bias=bias)

    s = sweep(r, base=(model, tok), r=[2, 4], output_dir=str(tmp_path / "sweep"), progress=False)

    assert all((p.detach() == before).all() for p, before in weights.values())  # the packed 4-bit weights too
    second = s.points[1].recipe
    second.output_dir = str(tmp_path / "fresh")
    fresh = lora_nb.run(second, progress=False)  # loads the model anew
    assert losses(s.points[1].run) == losses(fresh)  # point 1's adapter (and its trained biases) left nothing behind
    assert len(losses(fresh)) == 2


class StopAt(RunCallback):
    """Stops the sweep at a point's first step: by Sweep.stop(), or as Ctrl-C would (SIGINT)."""

    def __init__(self, label, interrupt=False):
        self.label, self.interrupt, self.sweep = label, interrupt, None

    def begin_sweep(self, sweep):
        self.sweep = sweep

    def on_step_end(self, args, state, control, **kw):
        if self.run.name == self.label and state.global_step == 1:
            if self.interrupt:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                self.sweep.stop()


def test_stop_ends_the_sweep_in_its_current_point_and_keeps_the_finished_ones(llama, data, tmp_path):
    s = sweep(recipe(llama, data), r=[2, 4, 8], output_dir=str(tmp_path / "sweep"), progress=False,
              callbacks=[StopAt("r4-s0")], background=True)

    assert s.wait(timeout=300).status == "stopped" and not s.running
    assert [p.status for p in s.points] == ["finished", "stopped", "pending"]
    stopped = s.points[1].run
    assert stopped.step < 3 and stopped.saved_step == stopped.step  # its adapter is saved where it stopped
    assert not (tmp_path / "sweep" / "r8-s0").exists()
    again = Sweep.load(tmp_path / "sweep")
    assert again.status == "stopped" and [p.status for p in again.points] == ["finished", "stopped", "pending"]
    assert [row["status"] for row in again.table()] == ["finished", "stopped", "pending"]


def test_a_sweep_stopped_in_its_last_point_says_stopped(llama, data, tmp_path):
    s = sweep(recipe(llama, data), r=[2, 4], output_dir=str(tmp_path / "sweep"), progress=False,
              callbacks=[StopAt("r4-s0")], background=True)

    assert s.wait(timeout=300).status == "stopped" and [p.status for p in s.points] == ["finished", "stopped"]


def test_an_interrupt_ends_the_sweep_without_an_error(llama, data, tmp_path):
    s = sweep(recipe(llama, data), r=[2, 4], output_dir=str(tmp_path / "sweep"), progress=False,
              callbacks=[StopAt("r2-s0", interrupt=True)])  # returns: train() turns Ctrl-C into a stop

    assert s.status == "interrupted" and [p.status for p in s.points] == ["interrupted", "pending"]
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("grid, words", [
    ({"rank": [4]}, "rank: is not a setting a sweep can vary. Allowed: .* Did you mean 'r'?"),
    ({"lrr": [1e-4]}, "Did you mean 'lr'?"),
    ({"lora.rnak": [4]}, r"lora.rnak: unknown setting. Allowed: r, alpha, .* Did you mean 'r'?"),
    ({"lorra.r": [4]},
     r"lorra: unknown section \(in 'lorra.r'\). Allowed: model, lora, data, train. Did you mean 'lora'?"),
    ({"seed": [1]}, "seed: is a setting of several sections: write lora.seed or train.seed"),
    ({"name": ["gpt2"]}, "name: cannot vary in a sweep: the points share one loaded base model"),
    ({"train.seed": [1, 2]}, "train.seed: cannot vary in a sweep: use seeds=n"),
    ({"r": [4, 4]}, r"r: is listed twice \(got 4\)"),
    ({"r": [4], "lora.r": [8]}, r"lora.r: names the same setting \(lora.r\) as 'r'"),
])
def test_grid_keys_are_checked_and_a_typo_gets_the_nearest(llama, grid, words):
    with pytest.raises(ConfigError, match=words):
        Sweep(recipe(llama, "d.jsonl"), **grid)


@pytest.mark.parametrize("grid, words", [
    ({"r": [4, 0]}, r"lora.r: must be a positive whole number \(got 0\)"),
    ({"lr": [1e-4, "x"]}, r"train.lr: must be float \(got 'x'\)"),
    ({"targets": ["attention", "nope"]}, r"lora.targets: matches no linear module \(got 'nope'\)"),  # needs the model
    ({"seeds": 0}, r"seeds: must be a positive whole number"),
    ({"metric": "exact_mtach", "eval_data": "t.jsonl"}, "metric: unknown metric.*Did you mean 'exact_match'?"),
])
def test_bad_values_are_refused_before_anything_trains(llama, data, in_tmp, grid, words):
    with pytest.raises(ConfigError, match=words):
        sweep(recipe(llama, data), progress=False, **grid)
    assert list(in_tmp.iterdir()) == []  # no sweep folder, no run folder


def test_a_folder_holding_files_is_refused(llama, data, tmp_path):
    (tmp_path / "old.txt").write_text("kept")
    with pytest.raises(ConfigError, match="output_dir: the folder is not empty"):
        sweep(recipe(llama, data), r=[2, 4], output_dir=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]


def test_the_exported_sweep_script_trains_every_point_as_the_sweep_did(llama, data, tmp_path):
    s = sweep(recipe(llama, data), r=[2, 4], targets=["attention"], output_dir=str(tmp_path / "sweep"), progress=False)
    script = tmp_path / "sweep_lora.py"
    script.write_text(s.to_script())
    text = script.read_text()
    assert undefined_names(text) == set() and "lora_nb" not in imports(text)
    points = next(ast.literal_eval(node.value) for node in ast.parse(text).body
                  if isinstance(node, ast.Assign) and node.targets[0].id == "POINTS")
    assert [label for label, _ in points] == ["r2-s0", "r4-s0"] and [c["LORA_CONFIG"]["r"] for _, c in points] == [2, 4]

    (tmp_path / "elsewhere").mkdir()  # not the repository: nothing of lora_nb on the path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(without_lora_nb(script, "--output-dir", tmp_path / "script"), env=env,
                          cwd=tmp_path / "elsewhere", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for point in s.points:
        folder = tmp_path / "script" / point.label
        assert (folder / "adapter" / "adapter_model.safetensors").exists()
        assert script_losses(folder)[0] == losses(point.run)  # each point reloads the model: same losses
    assert "== sweep point 2/2: r4-s0" in done.stdout


def test_grid_values_reach_the_sweep_script_only_as_literals(llama):
    paths = [HOSTILE + "a", HOSTILE + "b"]  # quotes, triple quotes, a newline, braces and a call
    s = Sweep(recipe(llama, "d.jsonl"), **{"data.path": paths})  # planned, not run: export needs no training

    script = s.to_script()

    assert HOSTILE not in script
    code = ast.unparse(StripStrings().visit(ast.parse(script)))
    assert "PWNED" not in code and "__import__" not in code
    points = constants(script)["POINTS"]
    assert [c["DATA"] for _, c in points] == paths
    assert [label for label, _ in points] == [p.label for p in s.points]
    # one folder each, inside the sweep's
    assert all("/" not in label and not label.startswith(".") for label, _ in points)
