"""Shared fixtures: tiny real models built from transformers configs, cached for the session.

Nothing touches the network: the Hub is switched off, models and tokenizers are built locally
(lora_nb.demo.tiny) into one session cache, and the parity task's rows are generated. The notebooks
run on the embedded model even where a pretrained one is at hand (lora_nb.demo.pretrained_base).
"""

from __future__ import annotations

import os
import shutil
import subprocess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["LORA_NB_BASE"] = "embedded"  # set here, not in a fixture: Jupyter kernels the tests start inherit it

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Every tiny model and tokenizer of the session is built once, here."""
    folder = os.environ.get("LORA_NB_TEST_CACHE") or str(tmp_path_factory.mktemp("lora_nb_cache"))
    os.environ["LORA_NB_CACHE"] = folder
    return folder


@pytest.fixture(scope="session")
def tiny():
    """tiny(family) -> folder of a saved tiny model (llama, gpt2, phi3, qwen3_moe, bert)."""
    from lora_nb.demo.tiny import tiny_model

    return tiny_model


@pytest.fixture(scope="session")
def llama(tiny):
    return str(tiny("llama"))


@pytest.fixture(scope="session")
def parity():
    """(train_rows, test_rows) of the demo's alpaca task, small."""
    from lora_nb.demo import tasks

    return tasks.split(48, 8)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test from an empty folder, so default run folders land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def shell():
    """A fresh InteractiveShell (history off): IPython's display() publishes through it."""
    from traitlets.config import Config
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.enabled = False
    yield InteractiveShell.instance(config=config)
    InteractiveShell.clear_instance()


def _mount(folder, options):
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True).returncode == 0
    except OSError:  # no mount command
        return False


@pytest.fixture
def disk(tmp_path):
    """A real 2 MiB file system (tmpfs), unmounted after the test."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if not _mount(folder, "size=2m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def fill():
    """fill(disk, leave): fill ``disk`` up to ``leave`` bytes free (a file named ``filler``)."""
    def fill(disk, leave):
        (disk / "filler").write_bytes(b"\1" * (shutil.disk_usage(disk).free - leave))

    return fill
