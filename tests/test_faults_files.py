"""Faults on disk and in adapter folders: each ends as one ConfigError line and leaves nothing behind.

The disks are real: a 2 MiB tmpfs filled to the brim, the same remounted read-only (both need
root; skipped otherwise), a path under a file. The adapters are real PEFT saves of a tiny model,
then torn, pickled or mismatched the ways they are in the field.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import pytest
import torch

import lora_nb
from lora_nb.model.attach import load_adapter
from lora_nb.runs.adapters import adapter_meta
from lora_nb.core.files import atomic_write, replace_folder, write_error, writing


def read_only(disk):
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)


def snapshot(folder):
    """Every file under ``folder`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def adapted(tiny):
    model, tok = lora_nb.load(str(tiny("llama")), dtype="fp32")
    return lora_nb.inject(model, r=4, targets=["q_proj", "v_proj"], seed=0, verbose=False), tok


# --- full disk, read-only disk, a parent that is a file ------------------------------------------

def test_a_full_disk_leaves_nothing_of_a_save_or_a_merge(adapted, disk, fill):
    model, tok = adapted
    fill(disk, leave=32 * 1024)  # the adapter's files fit, its tokenizer's do not: a half-written folder
    before = snapshot(disk)
    with pytest.raises(lora_nb.ConfigError) as saved:
        lora_nb.save(model, disk / "adapter", tokenizer=tok)
    message = str(saved.value)
    assert message.startswith(f"folder: cannot write {disk / 'adapter'}: the disk is full (")
    assert "KiB free); nothing was left behind. Free some space" in message and "\n" not in message
    with pytest.raises(lora_nb.ConfigError, match=r"^output_dir: cannot write .*merged: the disk is full"):
        lora_nb.merge(model, disk / "nested" / "merged", tokenizer=tok)  # model.safetensors torn mid-write
    assert snapshot(disk) == before, "no folder, no temporary sibling, no parent made for it"
    (disk / "filler").unlink()
    assert (lora_nb.save(model, disk / "adapter", tokenizer=tok) / "adapter_model.safetensors").exists()
    assert (lora_nb.merge(model, disk / "nested" / "merged") / "model.safetensors").exists()


def test_a_full_disk_leaves_an_overwritten_merge_as_it_was(adapted, disk, fill):
    model, tok = adapted
    out = lora_nb.merge(model, disk / "merged", tokenizer=tok)
    (out / "notes.txt").write_text("mine")
    fill(disk, leave=64 * 1024)
    before = snapshot(disk)
    with pytest.raises(lora_nb.ConfigError, match="output_dir: .*the disk is full.*nothing was left behind"):
        lora_nb.merge(model, out, tokenizer=tok, overwrite=True)
    assert snapshot(disk) == before
    (disk / "filler").unlink()
    lora_nb.merge(model, out, tokenizer=tok, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and not list(disk.glob(".*")) and not list(out.glob(".*"))


def test_a_read_only_disk_is_named(adapted, disk):
    model, tok = adapted
    (disk / "taken").mkdir()
    (disk / "taken" / "notes.txt").write_text("mine")
    read_only(disk)
    before = snapshot(disk)
    with pytest.raises(lora_nb.ConfigError, match=r"^folder: cannot write .*adapter: the disk is read-only; "
                       r"nothing was left behind\. Choose a folder on a writable disk\.$"):
        lora_nb.save(model, disk / "adapter")
    with pytest.raises(lora_nb.ConfigError, match=r"^output_dir: cannot write .*taken: the disk is read-only"):
        lora_nb.merge(model, disk / "taken", overwrite=True)
    with pytest.raises(lora_nb.ConfigError, match=r"^output_dir: cannot write .*run: the disk is read-only"):
        with writing(disk / "run", "output_dir") as tmp:  # the helper itself, as a training save would call it
            (tmp / "run.json").write_text("{}")
    assert snapshot(disk) == before


def test_a_parent_that_is_a_file_is_named(adapted, tmp_path):
    model, _ = adapted
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    for out in (tmp_path / "notes.txt" / "merged", tmp_path / "notes.txt" / "a" / "b"):
        with pytest.raises(lora_nb.ConfigError, match=rf"^output_dir: cannot write {re.escape(str(out))}: "
                           rf"{re.escape(str(tmp_path / 'notes.txt'))} is a file but should be a directory; "
                           r"nothing was left behind\. Move that file"):
            lora_nb.merge(model, out)
    with pytest.raises(lora_nb.ConfigError, match=r"^folder: .*notes.txt is a file but should be a directory"):
        lora_nb.save(model, tmp_path / "notes.txt", overwrite=True)  # overwrite never turns a file into a folder
    assert snapshot(tmp_path) == before


def test_the_write_helpers_leave_nothing_and_keep_the_old_version(disk, fill):
    atomic_write(disk / "run.json", "old")
    (disk / "adapter").mkdir()
    (disk / "adapter" / "a.txt").write_text("old")
    fill(disk, leave=8 * 1024)
    before = snapshot(disk)
    with pytest.raises(OSError) as raw:
        atomic_write(disk / "run.json", "x" * 64 * 1024)
    assert raw.value.errno == errno.ENOSPC and snapshot(disk) == before

    def fill_folder(tmp):
        tmp.mkdir()
        (tmp / "a.txt").write_bytes(b"x" * 64 * 1024)

    with pytest.raises(OSError):
        replace_folder(disk / "adapter", fill_folder)
    assert snapshot(disk) == before
    assert "the disk is full (" in str(write_error(raw.value, disk / "run.json", "output_dir"))


@pytest.mark.parametrize("number, said", [
    (errno.EACCES, "permission denied; nothing was left behind. Choose a folder you can write to."),
    (errno.EPERM, "permission denied;"),
    (errno.EDQUOT, "the disk quota is used up;"),
    (errno.ENAMETOOLONG, "a name in it is too long;"),
])
def test_other_file_system_errors_read_as_one_line(number, said, tmp_path):
    rust = RuntimeError(f"Error while serializing: I/O error: {os.strerror(number)} (os error {number})")
    for error in (OSError(number, os.strerror(number)), rust):  # safetensors' and tokenizers' I/O errors count
        assert str(write_error(error, tmp_path / "out", "out_dir")).startswith(
            f"out_dir: cannot write {tmp_path / 'out'}: {said}")
    assert write_error(ValueError("not a file system error"), tmp_path, "out_dir") is None


def test_a_ctrl_c_in_a_save_leaves_nothing(adapted, tmp_path):
    model, tok = adapted

    class Interrupted:  # a tokenizer whose save is cut short by Ctrl-C, after the adapter was written
        def save_pretrained(self, folder):
            tok.save_pretrained(folder)
            (folder / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes()[:100])
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match=r"^folder: interrupted while writing .*adapter; nothing was left"):
        lora_nb.save(model, tmp_path / "adapter", tokenizer=Interrupted())
    assert list(tmp_path.iterdir()) == []
    assert (lora_nb.save(model, tmp_path / "adapter", tokenizer=tok) / "tokenizer.json").exists()


# --- adapter folders that are wrong ----------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(adapted, tmp_path_factory):
    model, tok = adapted
    with torch.no_grad():  # a visible adapter: PEFT starts lora_B at zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    return lora_nb.save(model, tmp_path_factory.mktemp("adapters") / "good", tokenizer=tok)


def _broken(saved, tmp_path, how):
    folder = shutil.copytree(saved, tmp_path / "broken")
    config = json.loads((folder / "adapter_config.json").read_text())
    weights = folder / "adapter_model.safetensors"
    if how == "missing":
        shutil.rmtree(folder)
    elif how == "a file":
        shutil.rmtree(folder)
        folder.write_text("not a folder")
    elif how == "no config":
        (folder / "adapter_config.json").unlink()
    elif how == "pickle only":
        weights.unlink()
        # unpickling this creates a file: the test proves it never happens
        (folder / "adapter_model.bin").write_bytes(pickle.dumps(_Trap(str(tmp_path / "unpickled"))))
    elif how == "torn weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "garbage config":
        (folder / "adapter_config.json").write_text("{'r': 4,")
    else:
        config.update({"wrong peft_type": {"peft_type": "PREFIX_TUNING"}, "no peft_type": {"peft_type": None},
                       "absent targets": {"target_modules": ["attn_qkv"]},
                       "other targets": {"target_modules": ["k_proj"]}, "other rank": {"r": 8}}[how])
        (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


class _Trap:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


FAULTS = {
    "missing": r"broken does not exist; give the folder lora_nb.save wrote",
    "a file": r"broken is a file, not an adapter folder",
    "no config": r"broken holds no adapter_config.json",
    "pickle only": r"broken holds adapter_model.bin, a pickle, and no adapter_model.safetensors: lora_nb loads "
                   r"safetensors only",
    "torn weights": r"adapter_model.safetensors is not a whole safetensors file \(.*\); the save was cut short",
    "garbage config": r"adapter_config.json is not JSON \(Expecting property name",
    "wrong peft_type": r"adapter_config.json has peft_type 'PREFIX_TUNING', not 'LORA'",
    "no peft_type": r"adapter_config.json has peft_type None, not 'LORA'",
    "absent targets": r"does not fit the base model .*: Target modules \{'attn_qkv'\} not found",
    "other targets": r"does not fit the base model .*: 8 weights in adapter_model.safetensors belong to no layer",
    "other rank": r"does not fit the base model .*: size mismatch for",
}


def _state(model):
    return ([(name, type(m)) for name, m in model.named_modules()], hasattr(model, "peft_config"),
            {name: (p.detach().clone(), p.requires_grad) for name, p in model.named_parameters()})


def _same(a, b):
    return a[:2] == b[:2] and a[2].keys() == b[2].keys() and all(
        torch.equal(a[2][k][0], b[2][k][0]) and a[2][k][1] == b[2][k][1] for k in a[2])


@pytest.mark.parametrize("how", list(FAULTS))
def test_a_wrong_adapter_folder_is_one_line_and_leaves_the_base_untouched(how, saved, tiny, tmp_path):
    folder = _broken(saved, tmp_path, how)
    base, _ = lora_nb.load(str(tiny("llama")), dtype="fp32")
    before = _state(base)
    with pytest.raises(lora_nb.ConfigError) as refused:
        lora_nb.load_adapter(base, folder)
    message = str(refused.value)
    assert message.startswith("folder: ") and "\n" not in message
    assert re.search(FAULTS[how], message), message
    assert _same(_state(base), before), "no half-injected adapter is left on the base"
    assert not (tmp_path / "unpickled").exists()
    if how not in ("absent targets", "other targets", "other rank"):  # found without any base
        with pytest.raises(lora_nb.ConfigError, match=FAULTS[how]):
            adapter_meta(folder)
        with pytest.raises(lora_nb.ConfigError, match=r"^model: .*" + FAULTS[how]):
            lora_nb.merge(str(folder), tmp_path / "merged")
        with pytest.raises(lora_nb.ConfigError, match=FAULTS[how]):
            lora_nb.load_adapter(str(tiny("llama")), folder)
    else:
        with pytest.raises(lora_nb.ConfigError, match=FAULTS[how]):
            load_adapter(str(tiny("llama")), folder, quant=None, dtype="fp32")
    assert not (tmp_path / "merged").exists() and not (tmp_path / "unpickled").exists()
    good = lora_nb.load_adapter(base, saved)  # the same base still takes the right adapter
    fresh = lora_nb.load_adapter(str(tiny("llama")), saved)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.allclose(good(ids).logits, fresh(ids).logits.float(), atol=1e-5)


def test_a_torn_lora_nb_json_is_named_where_it_is_read(saved, tiny, tmp_path):
    folder = shutil.copytree(saved, tmp_path / "adapter")
    (folder / "lora_nb.json").write_text('{"base": "x", "quant"')
    with pytest.raises(lora_nb.ConfigError, match=r"^folder: .*lora_nb.json is not JSON \(.*\); delete it to fall "
                       "back on adapter_config.json"):
        lora_nb.load_adapter(str(tiny("llama")), folder)  # how to load the base is read from it
    base, _ = lora_nb.load(str(tiny("llama")), dtype="fp32")
    assert lora_nb.load_adapter(base, folder).peft_config["default"].r == 4  # a loaded base does not need it


def test_a_temporary_folder_left_by_a_killed_write_does_not_block_the_folder(adapted, tmp_path):
    model, tok = adapted
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its number names the leftover of a write killed (kill -9) before it could clean up
    out = tmp_path / "adapter"
    (out / f".lora_nb.tmp{dead.pid}").mkdir(parents=True)
    (out / f".lora_nb.tmp{dead.pid}" / "adapter_model.safetensors").write_bytes(b"torn")
    lora_nb.save(model, out, tokenizer=tok)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert (out / "adapter_model.safetensors").stat().st_size > 4
    (out.parent / "mine").mkdir()
    (out.parent / "mine" / f".lora_nb.tmp{os.getpid()}").mkdir()  # a live process's: still taken
    with pytest.raises(lora_nb.ConfigError, match="not empty"):
        lora_nb.save(model, out.parent / "mine", tokenizer=tok)
