"""lora_nb.resume(): the newest run a kill left, found locally or in a mirror, continued with the same losses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

import lora_nb
from killing import kill_once_saved
from lora_nb.runs.record import Run

STEPS = 40


def losses_by_step(history):
    return {h["step"]: h["loss"] for h in history if "loss" in h}


@pytest.fixture(scope="module")
def killed(llama, parity, tmp_path_factory):
    """(a run folder killed -9 after its checkpoint of step 8 or later, the losses of the same recipe run straight)."""
    home = tmp_path_factory.mktemp("killed")
    data = home / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    recipe = lora_nb.Recipe.from_dict({
        "model": {"name": llama}, "lora": {"r": 4, "targets": "all-linear"}, "data": {"path": str(data)},
        # a checkpoint every 4 steps, however fast the run (lora_nb's own cadence spaces them 30 s apart)
        "train": {"steps": STEPS, "batch_size": 4, "max_length": 64, "lr": 1e-3, "sft": {"save_steps": 4}}})
    script = textwrap.dedent(f"""
        import lora_nb
        lora_nb.run(lora_nb.Recipe.from_yaml({recipe.to_yaml()!r}), progress=False)
    """)
    run = kill_at_step_8(script, home, home / "runs")
    recipe.output_dir = str(home / "straight")
    straight = lora_nb.run(recipe, progress=False)
    return run.dir, losses_by_step(straight.history), recipe


def kill_at_step_8(script, home, watched):
    """The run ``script`` starts in ``home``, killed -9 once a run.json under ``watched`` says step 8 is saved."""
    def status():
        return next(watched.glob("*/run.json"), None) if watched.exists() else None

    kill_once_saved(script, status, cwd=home)
    run = Run.load(status().parent)
    assert run.status == "killed" and 8 <= run.saved_step < STEPS, (run.status, run.saved_step)
    return run


def assert_continued(folder, killed_step, expected):
    got = losses_by_step(Run.load(folder).history)
    assert Run.load(folder).status == "finished"
    assert sorted(got) == list(range(1, STEPS + 1))  # no step lost or doubled in metrics.jsonl
    after = [s for s in expected if s > killed_step]
    assert [got[s] for s in after] == pytest.approx([expected[s] for s in after], rel=1e-5)


def test_resume_with_no_argument_continues_the_killed_run_in_a_fresh_process(killed, tmp_path):
    folder, expected, _ = killed
    shutil.copytree(folder, tmp_path / "runs" / folder.name)
    saved = Run.load(folder).saved_step
    script = "import lora_nb\nrun = lora_nb.resume(progress=False)\nprint('STATUS', run.status, run.step)\n"
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True,
                         timeout=300).stdout
    assert f"resuming runs/{folder.name} (killed at step " in out and f"from its checkpoint of step {saved})" in out
    assert f"STATUS finished {STEPS}" in out
    assert_continued(tmp_path / "runs" / folder.name, saved, expected)


def test_a_run_only_in_the_mirror_is_copied_back_and_continued(killed, tmp_path, monkeypatch):
    folder, expected, _ = killed
    monkeypatch.chdir(tmp_path)
    mirror = tmp_path / "B"
    shutil.copytree(folder, mirror / folder.name)  # the local runs/ went with the runtime
    (mirror / folder.name / "checkpoints" / ".checkpoint-99.partial").mkdir()  # a copy torn by a disconnect
    saved = Run.load(folder).saved_step
    lines = []
    run = lora_nb.resume(mirror=str(mirror), progress=False, say=lines.append)
    assert lines == [f"resuming runs/{folder.name} (killed at step {Run.load(folder).step} of {STEPS}, from its "
                     f"checkpoint of step {saved}; from the mirror {mirror})"]
    assert run.dir == lora_nb.Run(f"runs/{folder.name}").dir and run.status == "finished"
    assert not list((tmp_path / "runs").glob(".*")), "the copy back leaves no temporary folder"
    assert_continued(tmp_path / "runs" / folder.name, saved, expected)
    # the resumed run mirrors to the same folder again: the mirror's copy is finished too; nothing is left to resume
    assert Run.load(mirror / folder.name).status == "finished"
    again = []
    assert lora_nb.resume(mirror=str(mirror), say=again.append) is None
    assert again == [f"nothing to resume: no killed, interrupted or stopped run with a checkpoint in runs, {mirror}"]


def test_nothing_to_resume_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORA_NB_MIRROR", str(tmp_path / "drive"))
    assert lora_nb.resume() is None
    assert capsys.readouterr().out == ("nothing to resume: no killed, interrupted or stopped run with a checkpoint "
                                       f"in runs, {tmp_path / 'drive'}\n")
    with pytest.raises(lora_nb.ConfigError, match="is no run folder, nor a run's name in runs"):
        lora_nb.resume("no-such-run")


def test_a_run_killed_while_mirroring_resumes_from_the_mirror_in_a_fresh_kernel(killed, tmp_path):
    """The issue's reset: kill -9 a run mirroring to B, lose the local runs/, %lora resume in a new IPython."""
    _, expected, recipe = killed
    recipe = lora_nb.Recipe.from_dict({**recipe.to_dict(), "output_dir": None})
    recipe.train.mirror = str(tmp_path / "B")
    script = f"import lora_nb\nlora_nb.run(lora_nb.Recipe.from_yaml({recipe.to_yaml()!r}), progress=False)\n"
    mirrored = kill_at_step_8(script, tmp_path, tmp_path / "B")  # the mirror's run.json: its checkpoint is there
    shutil.rmtree(tmp_path / "runs")  # the runtime reset took the local disk
    cell = ("%load_ext lora_nb\nrun = get_ipython().run_line_magic('lora', 'resume mirror=B')\n"
            "print('STATUS', run.status, run.step)\n")
    out = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", "-c", cell],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300).stdout
    assert f"resuming runs/{mirrored.dir.name} (killed at step " in out, out
    assert f"; from the mirror {tmp_path / 'B'})" in out, out  # mirror=B given: said as the folder it is
    assert f"STATUS finished {STEPS}" in out, out
    assert_continued(tmp_path / "runs" / mirrored.dir.name, mirrored.saved_step, expected)
    assert Run.load(tmp_path / "B" / mirrored.dir.name).status == "finished"  # and it mirrored again to the end
