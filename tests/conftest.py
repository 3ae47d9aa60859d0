"""Shared fixtures: tiny real models built from transformers configs, cached for the session.

Nothing touches the network: the Hub is switched off, models and tokenizers are built locally
(lora_nb.tiny) into one session cache, and the parity task's rows are generated. The notebooks
run on the embedded model even where a pretrained one is at hand (lora_nb.demo.pretrained_base).
"""

from __future__ import annotations

import os

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
    from lora_nb.tiny import tiny_model

    return tiny_model


@pytest.fixture(scope="session")
def llama(tiny):
    return str(tiny("llama"))


@pytest.fixture(scope="session")
def parity():
    """(train_rows, test_rows) of the demo's alpaca task, small."""
    from lora_nb import demo_data

    return demo_data.split(48, 8)


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
