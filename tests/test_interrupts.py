"""Ctrl-C works in every phase: a real SIGINT, sent the moment each phase's code runs, ends the
call within seconds, and what it leaves is either a complete run or nothing that blocks a retry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lora_nb
from lora_nb.runs.record import Run

PROBE = Path(__file__).with_name("interrupt_probe.py")
SECONDS = 15  # "within a few seconds", with room for two busy cores


def probe(*args: str, tmp_path: Path) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets"), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(PROBE), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


@pytest.fixture
def rows(tmp_path):
    """A few thousand rows written for this test only: no datasets cache makes a phase too short to catch."""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"What is {i} plus {i % 7} ({tmp_path.name})?", "input": "",
                                        "output": str(i + i % 7)}) + "\n" for i in range(4000)))
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"instruction": f"Say {i}.", "input": "", "output": str(i)}) + "\n"
                             for i in range(16)))
    return path, small


@pytest.mark.parametrize("suffix, function", [
    ("lora_nb/data/prepare.py", "prepare"),                    # reading and checking the rows
    ("trl/trainer/sft_trainer.py", "_prepare_dataset"),  # tokenising
    # datasets fingerprints each map under a bare except, which swallowed an interrupt landing there
    ("trl/trainer/sft_trainer.py>datasets/fingerprint.py", "_prepare_dataset>update_fingerprint"),
    ("trl/trainer/sft_trainer.py", "__init__"),          # building the trainer
], ids=["reading", "tokenising", "tokenising-fingerprint", "building-the-trainer"])
def test_ctrl_c_before_training_leaves_the_folder_as_it_was(llama, rows, tmp_path, suffix, function):
    out = tmp_path / "run"
    out.mkdir()  # an empty output_dir the user made: it must stay, empty
    report = probe(llama, rows[0], out, suffix, function, rows[1], tmp_path=tmp_path)
    assert report["signalled"] and report["outcome"] == "KeyboardInterrupt"
    assert report["seconds_to_end"] < SECONDS
    assert report["files"] == []
    assert report["retry"] == "finished"  # the same output_dir takes the next run


def test_ctrl_c_while_training_stops_at_the_step_and_saves(llama, rows, tmp_path):
    out = tmp_path / "run"
    report = probe(llama, rows[0], out, "transformers/trainer.py", "training_step", tmp_path=tmp_path)
    assert report["signalled"] and report["outcome"] == "interrupted" and report["seconds_to_end"] < SECONDS
    run = Run.load(out)
    assert run.status == "interrupted" and (run.adapter_dir / "adapter_model.safetensors").is_file()


def test_ctrl_c_during_the_final_save_waits_for_it(llama, rows, tmp_path):
    out = tmp_path / "run"
    report = probe(llama, rows[1], out, "lora_nb/training/execution.py", "_finish", tmp_path=tmp_path)
    assert report["signalled"] and report["outcome"] == "finished" and report["seconds_to_end"] < SECONDS
    run = Run.load(out)
    assert run.status == "finished" and (run.adapter_dir / "adapter_model.safetensors").is_file()


def test_ctrl_c_during_merge_leaves_nothing_and_a_retry_merges(llama, tmp_path):
    (tmp_path / "m").mkdir()
    out = tmp_path / "m" / "merged"
    report = probe(llama, "merge", out, "safetensors/torch.py", "save_file", "merge", tmp_path=tmp_path)
    assert report["signalled"] and report["outcome"] == "KeyboardInterrupt" and report["seconds_to_end"] < SECONDS
    assert report["files"] is None and report["beside"] == []  # no folder, no temporary sibling
    assert report["retry"] == "merged"


def test_a_folder_left_by_a_kill_before_training_takes_the_next_run(lora_nb_model, tmp_path):
    """kill -9 cannot be cleaned up after: the folder it leaves is known by its mark and taken as empty."""
    import signal
    import textwrap
    import time

    model, tok, llama = lora_nb_model
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i} " * 20}) + "\n" for i in range(20000)))
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import lora_nb
        model, tok = lora_nb.load({llama!r}, dtype="fp32")
        model = lora_nb.inject(model, r=4, verbose=False)
        lora_nb.train(model, tok, {str(data)!r}, steps=5, output_dir={str(out)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script],
                            env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "ds")})
    deadline = time.time() + 300
    while not (out / ".lora_nb-preparing.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / ".lora_nb-preparing.json").exists() and not (out / "run.json").exists()
    from lora_nb.runs.find import find_runs

    assert find_runs(str(tmp_path)) == []  # listed as no run, whatever it holds
    run = lora_nb.train(model, tok, [{"text": "hello there"}] * 8, steps=1, output_dir=str(out), progress=False)
    assert run.status == "finished" and not (out / ".lora_nb-preparing.json").exists()
    assert not (out / "train.jsonl").exists() or "hello there" in (out / "train.jsonl").read_text()


def test_a_user_folder_without_the_mark_is_still_refused(lora_nb_model, tmp_path):
    model, tok, _ = lora_nb_model
    (tmp_path / "log.txt").write_text("my notes")
    with pytest.raises(lora_nb.ConfigError, match="not empty"):
        lora_nb.train(model, tok, [{"text": "hello"}] * 8, steps=1, output_dir=str(tmp_path), progress=False)
    assert (tmp_path / "log.txt").read_text() == "my notes"


@pytest.fixture
def lora_nb_model(llama):
    model, tok = lora_nb.load(llama, dtype="fp32")
    return lora_nb.inject(model, r=4, verbose=False), tok, llama


# --- a disk that fills up while training: one line, and the last checkpoint resumes ---------------

def test_a_disk_that_fills_while_training_is_one_line_and_the_run_resumes(lora_nb_model, parity, disk, fill):
    from transformers import TrainerCallback

    model, tok, _ = lora_nb_model
    out = disk / "run"

    class FillTheDisk(TrainerCallback):  # something else on the machine takes the space after step 3
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                fill(disk, leave=0)

    with pytest.raises(lora_nb.ConfigError) as error:
        lora_nb.train(model, tok, parity[0], steps=12, batch_size=4, max_length=64, output_dir=str(out),
                      save_steps=2, callbacks=[FillTheDisk()], progress=False)
    message = str(error.value)
    assert "\n" not in message and error.value.__cause__ is None
    assert message.startswith(f"output_dir: cannot write {out}") and "the disk is full" in message
    assert "the checkpoint of step 2 is kept" in message and f'resume="{out}"' in message
    (disk / "filler").unlink()
    resumed = lora_nb.train(model, tok, parity[0], resume=str(out), steps=12, batch_size=4, max_length=64,
                            save_steps=2, progress=False)
    assert resumed.status == "finished" and resumed.step == 12


def test_a_read_only_or_blocked_output_dir_is_one_line_and_leaves_nothing(lora_nb_model, parity, tmp_path):
    model, tok, _ = lora_nb_model
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(lora_nb.ConfigError, match=r"^output_dir: .*notes.txt is a file") as error:
        lora_nb.train(model, tok, parity[0], steps=1, output_dir=str(tmp_path / "notes.txt" / "run"), progress=False)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_read_only_output_dir_is_one_line(lora_nb_model, parity, disk):
    import subprocess as sp

    model, tok, _ = lora_nb_model
    sp.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    with pytest.raises(lora_nb.ConfigError, match=r"^output_dir: cannot write .*: the disk is read-only") as error:
        lora_nb.train(model, tok, parity[0], steps=1, output_dir=str(disk / "run"), progress=False)
    assert "\n" not in str(error.value) and list(disk.iterdir()) == []
