"""train.mirror: the run folder copied as it is written, every file whole, a checkpoint only complete."""

import filecmp
import threading
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import lora_nb
from killing import kill_once_saved
from lora_nb.hf.folders import last_checkpoint
from lora_nb.runs.record import Run


@pytest.fixture
def lora_llama(llama):
    model, tok = lora_nb.load(llama)
    return lora_nb.inject(model, r=4, verbose=False), tok


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def losses_by_step(history):
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def test_a_mirrored_run_has_the_same_files_in_the_mirror(lora_llama, parity, in_tmp):
    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=6, batch_size=4, max_length=64, save_steps=2, progress=False,
                        mirror=str(in_tmp / "B"))
    copy = in_tmp / "B" / run.name
    assert run.mirror == str(in_tmp / "B") and files(copy) == files(run.dir)
    for name in ("adapter/adapter_model.safetensors", "metrics.jsonl", "recipe.yaml", "run.json"):
        assert filecmp.cmp(run.dir / name, copy / name, shallow=False), name
    info = json.loads((copy / "run.json").read_text())
    assert info["mirror"] == str(in_tmp / "B") and info["mirror_behind"] == "" and info["status"] == "finished"
    assert Run.load(copy).mirror == str(in_tmp / "B")
    assert not any(t.name == "lora_nb-mirror" for t in threading.enumerate())  # its thread ended
    # pruned as the run folder is: its last complete checkpoint only, nothing partial
    assert sorted(p.name for p in (copy / "checkpoints").iterdir() if p.is_dir()) == ["checkpoint-6"]
    assert last_checkpoint(copy) == str(copy / "checkpoints" / "checkpoint-6")


def test_a_torn_copy_in_the_mirror_is_not_taken_for_a_checkpoint(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    whole = checkpoints / "checkpoint-4"
    whole.mkdir(parents=True)
    (whole / "trainer_state.json").write_text('{"global_step": 4}')
    torn = checkpoints / ".checkpoint-8.partial"  # a disconnect in the middle of copying checkpoint 8
    torn.mkdir()
    (torn / "trainer_state.json").write_text('{"global_step": 8}')
    (torn / "adapter_model.safetensors").write_bytes(b"\x00" * 10)  # a half file
    (checkpoints / ".trainer_state.json.123.tmp").write_text('{"glo')
    assert last_checkpoint(tmp_path / "run") == str(whole)


def test_an_unwritable_mirror_is_one_line_before_training(lora_llama, parity, in_tmp):
    model, tok = lora_llama
    (in_tmp / "afile").write_text("not a folder")
    with pytest.raises(lora_nb.ConfigError, match=r"train.mirror.*not a folder") as e:
        lora_nb.train(model, tok, parity[0], steps=2, mirror=str(in_tmp / "afile"), output_dir="out")
    assert len(str(e.value).splitlines()) == 1 and not (in_tmp / "out").exists()
    if os.geteuid() != 0:  # root writes anywhere
        (in_tmp / "ro").mkdir()
        (in_tmp / "ro").chmod(0o500)
        with pytest.raises(lora_nb.ConfigError, match=r"train.mirror.*cannot be written"):
            lora_nb.train(model, tok, parity[0], steps=2, mirror=str(in_tmp / "ro"))


def test_a_mirror_that_fails_mid_run_is_one_warning_and_training_goes_on(lora_llama, parity, in_tmp, capsys):
    from transformers import TrainerCallback

    class Unmount(TrainerCallback):  # the Drive goes away after the first save: its folder becomes a file
        def on_save(self, args, state, control, **kw):
            if state.global_step == 2:
                os.replace(in_tmp / "B", in_tmp / "gone")
                (in_tmp / "B").write_text("unmounted")

    model, tok = lora_llama
    run = lora_nb.train(model, tok, parity[0], steps=6, batch_size=4, max_length=64, save_steps=2, progress=False,
                        mirror=str(in_tmp / "B"), callbacks=[Unmount()])
    assert run.status == "finished" and run.step == 6
    err = capsys.readouterr().err
    assert err.count("mirror:") == 1 and "behind" in err
    assert "failed" in json.loads((run.dir / "run.json").read_text())["mirror_behind"]


def test_a_killed_run_leaves_a_complete_checkpoint_in_the_mirror_that_resumes(llama, parity, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    settings = dict(steps=40, batch_size=4, max_length=64, lr=1e-3, save_steps=4, progress=False)
    mirror = tmp_path / "B"
    script = textwrap.dedent(f"""
        import lora_nb
        model, tok = lora_nb.load({llama!r})
        model = lora_nb.inject(model, r=4, verbose=False)
        lora_nb.train(model, tok, {str(data)!r}, output_dir={str(tmp_path / 'run')!r}, mirror={str(mirror)!r},
                      **{settings!r})
    """)
    kill_once_saved(script, mirror / "run" / "run.json")  # the copying thread dies mid-copy too

    shutil.rmtree(tmp_path / "run")  # the runtime reset: the local folder is gone, the mirror's copy comes back
    shutil.copytree(mirror / "run", tmp_path / "runs" / "run")
    copy = Run.load(tmp_path / "runs" / "run")
    assert copy.status == "killed" and copy.mirror == str(mirror) and 8 <= copy.saved_step < 40
    start = int(last_checkpoint(copy.dir).rsplit("-", 1)[1])  # the newest complete copy: run.json's or later
    assert start >= copy.saved_step

    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    resumed = lora_nb.train(model, tok, str(data), resume=str(copy.dir), **settings)
    assert resumed.status == "finished" and resumed.step == 40
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    straight = lora_nb.train(model, tok, str(data), output_dir=str(tmp_path / "straight"), **settings)
    got, expected = losses_by_step(Run.load(resumed.dir).history), losses_by_step(straight.history)
    assert sorted(got) == list(range(1, 41))
    after = [s for s in expected if s > start]
    assert [got[s] for s in after] == pytest.approx([expected[s] for s in after], rel=1e-5)


def test_the_exported_script_mirrors_its_run_folder(llama, parity, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    recipe = lora_nb.Recipe.from_dict({"model": {"name": llama}, "lora": {"r": 4, "targets": "attention"},
                                       "data": {"path": str(data)},
                                       "train": {"steps": 4, "batch_size": 4, "max_length": 64,
                                                 "sft": {"save_steps": 2}},
                                       "output_dir": str(tmp_path / "run")})
    assert "mirror" not in lora_nb.to_script(recipe).lower()  # a script without a mirror carries none of it
    recipe.train.mirror = str(tmp_path / "B")
    script = tmp_path / "train_lora.py"
    script.write_text(lora_nb.to_script(recipe))
    shim = ("import runpy, sys; sys.modules['lora_nb'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", shim, str(script)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    local, copy = tmp_path / "run-script", tmp_path / "B" / "run-script"
    assert files(copy) == files(local) and last_checkpoint(copy) == str(copy / "checkpoints" / "checkpoint-4")
    assert filecmp.cmp(local / "adapter" / "adapter_model.safetensors", copy / "adapter" / "adapter_model.safetensors",
                       shallow=False)
    (tmp_path / "afile").write_text("not a folder")
    recipe.train.mirror = str(tmp_path / "afile")
    script.write_text(lora_nb.to_script(recipe))
    done = subprocess.run([sys.executable, "-c", shim, str(script), "--output-dir", str(tmp_path / "no")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("MIRROR ")
