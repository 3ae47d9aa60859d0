"""find_runs / RunTable: every run folder on disk, newest first, with readable names; killed and torn runs included."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import psutil
import pytest

import lora_nb
from lora_nb.runs.find import find_runs
from lora_nb.runs.record import Run
from lora_nb.runs.table import RunTable, short_names
from lora_nb.runs.folders import new_run_dir


def train_one(llama, rows, **lora):
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, verbose=False, **lora)
    return lora_nb.train(model, tok, rows, steps=1, batch_size=8, max_length=64, lr=1e-3, progress=False)


@pytest.fixture(scope="module")
def two_runs(llama, parity, tmp_path_factory):
    """Two finished runs in ./runs, trained one after the other: (older, newer). The tests using
    them run from that folder."""
    folder = tmp_path_factory.mktemp("two_runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        runs = train_one(llama, parity[0], r=4), train_one(llama, parity[0], r=8, targets="attention")
    return folder, runs


@pytest.fixture
def two_runs_here(two_runs, monkeypatch):
    folder, runs = two_runs
    monkeypatch.chdir(folder)
    return runs


def test_runs_on_disk_newest_first_with_readable_names(two_runs_here):
    older, newer = two_runs_here
    assert re.fullmatch(r"\d{8}-\d{6}-r4-all-linear-lr1e-3", older.name), older.name
    assert newer.label == "r8-attention-lr1e-3" and newer.name.endswith("-r8-attention-lr1e-3")
    found = find_runs()  # read back from disk, as another kernel or the CLI would
    assert [run.name for run in found] == [newer.name, older.name]
    assert all(run.status == "finished" and run.step == 1 and run is not older for run in found)
    assert find_runs(runs=[older])[1] is older  # a run held in memory stands in for its folder's copy


def test_filter_and_limit(two_runs_here):
    older, newer = two_runs_here
    names = lambda **kw: [run.name for run in find_runs(**kw)]  # noqa: E731
    assert names(filter="r=8") == [newer.name]
    assert names(filter="lora.r=4 status=finished lr=1e-3") == [older.name]
    assert names(filter="attention") == [newer.name]  # text in the name or label
    assert names(filter="targets=all-linear") == [older.name]
    assert names(filter="status=killed") == []
    assert names(limit=1) == [newer.name]
    with pytest.raises(lora_nb.ConfigError, match=r"filter: is not a run setting \(got 'rr'\).*Did you mean 'r'"):
        find_runs(filter="rr=4")
    with pytest.raises(lora_nb.ConfigError, match="limit"):
        find_runs(limit=0)


def test_table_shows_label_start_time_and_eval_score(two_runs_here):
    older, newer = two_runs_here
    with open(older.dir / "evals.jsonl", "w") as f:  # what evaluate() appends, one line per evaluation
        f.write(json.dumps({"metric": "exact_match", "score": 0.25, "n": 8, "data": "t.jsonl", "time": 1}) + "\n")
        f.write(json.dumps({"metric": "exact_match", "score": 0.5, "n": 8, "data": "t.jsonl", "time": 2}) + "\n")
    table = RunTable(find_runs())
    rows = {row[0]: dict(zip(RunTable.HEADERS, row)) for row in table.rows()}
    assert rows[older.name]["eval score"] == 0.5 and rows[newer.name]["eval score"] is None
    assert rows[newer.name]["label"] == "r8-attention-lr1e-3"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", rows[older.name]["started"])
    assert re.fullmatch(r"\d+ s", rows[older.name]["time"])
    assert "eval score" in str(table) and "<img" in table._repr_html_()


def test_a_pid_the_os_gave_to_another_process_is_not_taken_for_the_run(llama, parity, in_tmp):
    # the run's process ended and its number now belongs to a live process (here: this one), which
    # started at another time: the run was killed, not running
    run = train_one(llama, parity[0], r=4)
    info = json.loads((run.dir / "run.json").read_text())
    assert info["pid"] == os.getpid() and abs(info["pid_started"] - psutil.Process().create_time()) < 1
    (run.dir / "run.json").write_text(json.dumps({**info, "status": "running",
                                                  "pid_started": info["pid_started"] - 3600}))
    assert Run.load(run.dir).status == "killed"
    (run.dir / "run.json").write_text(json.dumps({**info, "status": "running", "host": "elsewhere"}))
    assert Run.load(run.dir).status == "running"  # another machine's process: cannot tell, so not called killed
    (run.dir / "run.json").write_text(json.dumps({**info, "status": "running"}))
    assert Run.load(run.dir).status == "running"  # the very process that wrote it


def test_killed_torn_and_unreadable_run_folders_are_listed_not_raised(llama, parity, in_tmp):
    run = train_one(llama, parity[0], r=4)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process that has ended: its run.json says "running", but nobody is
    info = json.loads((run.dir / "run.json").read_text())
    (run.dir / "run.json").write_text(json.dumps({**info, "status": "running", "pid": dead.pid}))
    with open(run.dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')  # a kill in the middle of a write
    torn = in_tmp / "runs" / "sweep-1" / "torn"  # a level down, as a sweep's runs are
    torn.mkdir(parents=True)
    (torn / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    (torn / "run.json").write_text('{"status": "runn')
    odd = in_tmp / "runs" / "odd"
    odd.mkdir()
    (odd / "run.json").write_text("{}")
    (odd / "recipe.yaml").write_text("model: {name: m}\nlora: {rank: 8}\n")  # a key this version does not know
    (in_tmp / "runs" / "notes").mkdir()  # not a run folder: skipped
    found = {r.name: r for r in find_runs()}
    assert set(found) == {run.name, "torn", "odd"}
    assert found[run.name].status == "killed" and "resume=" in found[run.name].message
    assert [h["step"] for h in found[run.name].history] == [1]
    assert found["torn"].status == "unknown" and found["torn"].last("loss") == 2.0
    assert found["odd"].status == "unreadable" and "lora.rank" in found["odd"].message
    table = RunTable(list(found.values()))
    assert "killed" in str(table) and "unreadable" in table._repr_html_()


def test_a_notebook_shows_results_first_and_only_the_settings_that_differ(two_runs_here):
    """The cell's table fits a page: compact names (the folder and start time in the tooltip), results
    before settings, the settings the runs share left to their labels; a terminal's text the same columns;
    ``text(every_column=True)`` keeps every column."""
    older, newer = two_runs_here
    table = RunTable(find_runs())
    page = table._repr_html_()
    headers = re.findall(r"<th>(.*?)</th>", page)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)[1:]]

    assert headers[:3] == ["run", "label", "status"] and headers.index("loss") < headers.index("r")
    assert {"targets", "r"} <= set(headers) and not {"started", "lr", "batch", "eval loss"} & set(headers)
    assert [row[0] for row in rows] == short_names([newer, older]) and rows[0][1] == "r8-attention-lr1e-3"
    assert f"title='{newer.dir} · started 20" in page
    width = sum(max(len(h), *(len(row[i]) for row in rows)) + 2 for i, h in enumerate(headers))
    assert width <= 100 < len(table.text(every_column=True).splitlines()[0]), (width, headers)
    text = str(table).splitlines()
    assert text[0].split() == " ".join(headers).split() and len(text[0]) <= 100, text[0]
    assert [line.split("  ")[0] for line in text[2:]] == short_names([newer, older])
    assert newer.name in table.text(every_column=True)


def test_new_run_folders_are_unique(in_tmp):
    first = new_run_dir(None, label="r16-attention-lr2e-4")
    first.mkdir(parents=True)
    second = new_run_dir(None, label="r16-attention-lr2e-4")
    assert second != first and second.parent == first.parent and "r16-attention-lr2e-4" in second.name


def test_a_run_folder_given_as_root_is_found(two_runs_here):
    older, _ = two_runs_here
    assert [run.name for run in find_runs(older.dir)] == [older.name]
    assert find_runs("~/no-such-lora_nb-runs") == []
    assert isinstance(Run.load(older.dir).started, float)


def test_the_table_gives_a_runs_average_speed_not_its_last_steps(tmp_path):
    from lora_nb.runs.record import Run
    from lora_nb.runs.table import RunTable

    run = Run(tmp_path / "r")
    run.history = [{"step": 1, "tokens_per_s": 7.0}, {"step": 2, "tokens_per_s": 9.5}, {"step": 3, "tokens_per_s": 4.5}]
    table = RunTable([run])
    assert table.rows()[0][table.HEADERS.index("tokens/s")] == 7.0  # the last step said 4.5
    assert ["tokens/s (mean)", 7] in run._rows()


def test_a_terminal_shows_the_table_not_the_objects_address(tmp_path):
    """IPython in a terminal (or any console without HTML) prints the text table for `lora_nb.runs()`."""
    from IPython.lib.pretty import pretty

    from lora_nb.runs.record import Run
    from lora_nb.runs.table import RunTable

    run = Run(tmp_path / "20261206-101500-r4-all-linear-lr2e-4")
    run.history = [{"step": 1, "loss": 2.5}]
    shown = pretty(RunTable([run]))
    assert shown == str(RunTable([run])) and shown.startswith("run ") and "12-06 10:15" in shown
    assert "20261206-101500" in RunTable([run]).text(every_column=True)
    assert pretty(RunTable([])) == "no runs yet"


def test_runs_started_in_the_same_minute_are_told_apart_to_the_second(tmp_path):
    """The compact table, its chart legend and the panel's run picker read short_names: a minute two
    runs share gets its seconds; a minute of its own stays short."""
    from lora_nb.runs.record import Run
    from lora_nb.runs.table import RunTable

    runs = [Run(tmp_path / name) for name in ("20261206-101500-r4", "20261206-101542-r4", "20261206-111500-r4")]
    for run in runs:
        run.history = [{"step": 1, "loss": 2.0}]
    html = RunTable(runs).compact_html()
    assert "12-06 10:15:00" in html and "12-06 10:15:42" in html and ">12-06 11:15<" in html
    legend = [t.get_text() for t in RunTable(runs).figure(compact=True).axes[0].get_legend().get_texts()]
    assert len(set(legend)) == 3, legend


def test_on_done_registered_after_the_work_ended_is_still_called(tmp_path):
    """A run that ends before its caller registers on_done (a panel button's handler) still reports."""
    from lora_nb.runs.background import Background

    job, seen = Background(), []
    job.dir = tmp_path / "job"
    job.start(lambda: job.done())
    job.wait()
    job.on_done(lambda j: seen.append(j))
    assert seen == [job]
    job.start(lambda: None)  # started again: a later end reports to what is registered then
    job.wait()
    job.on_done(lambda j: seen.append("again"))
    assert seen == [job]
