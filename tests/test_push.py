"""lora_nb.push: the folder and model card built from a real tiny run (dry runs only: these machines
have no Hub, and no test calls the upload)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lora_nb
from lora_nb.inference.publish import NO_TOKEN


@pytest.fixture(autouse=True)
def in_test_tmp(tmp_path, monkeypatch):
    """Dry runs leave their folder for the caller: here, in the test's own tmp folder."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture(scope="module")
def run(llama, parity, tmp_path_factory):
    """A finished run with eval data, eval losses logged and one evaluate() recorded in evals.jsonl."""
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    folder = tmp_path_factory.mktemp("push") / "run"
    done = lora_nb.train(model, tok, parity[0], eval=parity[1], steps=3, batch_size=4, max_length=64, eval_steps=2,
                         lr=1e-3, progress=False, output_dir=str(folder))
    lora_nb.evaluate(model, tok, parity[1], metric="token_accuracy", run=done, progress=False)
    return done


def logits(model, tok):
    ids = tok("Even or odd?\n\n42", return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_dry_run_holds_the_adapter_the_card_and_the_chart(run):
    result = lora_nb.push(run, "me/parity-lora", dry_run=True)
    assert result.url is None and result.repo_id == "me/parity-lora" and "nothing uploaded" in str(result)
    assert result.files == sorted(p.name for p in result.folder.iterdir())
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "loss.png", "tokenizer.json",
            "tokenizer_config.json", "lora_nb.json"} <= set(result.files)
    assert not {"config.json", "model.safetensors"} & set(result.files)
    assert (result.folder / "loss.png").read_bytes() == (run.dir / "loss.png").read_bytes()
    card = result.card
    assert card == (result.folder / "README.md").read_text()
    base = run.recipe.model.name
    assert f"- model: `{base}` (a local folder)" in card
    assert "- loaded with: quantisation `none`, dtype `auto`" in card
    assert run.recipe.to_yaml().rstrip() in card and "```yaml" in card
    assert f"- train: `{run.recipe.data.path}` (split `train`), 48 rows" in card
    assert f"- eval: `{run.recipe.data.eval}`, 8 rows" in card
    assert f"- final train loss: {run.last('loss'):.4f}" in card
    assert f"- final eval loss: {run.last('eval_loss'):.4f}" in card
    score = json.loads((run.dir / "evals.jsonl").read_text().splitlines()[-1])
    assert f"| token_accuracy | {score['score']:.4f} | 8 | {score['data']} |" in card
    assert f"lora_nb {lora_nb.__version__}" in card and "![training and eval loss](loss.png)" in card
    assert f'PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "me/parity-lora")' in card


def test_the_card_parses_with_huggingface_hub(run, tmp_path):
    from huggingface_hub import ModelCard

    card = ModelCard.load(lora_nb.push(run, "me/x", dry_run=True).folder / "README.md")
    assert card.data.library_name == "peft" and card.data.tags == ["lora", "sft", "lora_nb", "trl"]
    assert card.data.base_model is None  # a local folder is no Hub id: the Hub would refuse it as metadata
    copy = tmp_path / "run"  # the same run, as if its base had come from the Hub
    shutil.copytree(run.dir, copy)
    for name in ("recipe.yaml", "adapter/lora_nb.json"):
        (copy / name).write_text((copy / name).read_text().replace(run.recipe.model.name, "HuggingFaceTB/SmolLM2-135M"))
    hub = lora_nb.push(str(copy), "me/x", dry_run=True)
    assert ModelCard(hub.card).data.base_model == "HuggingFaceTB/SmolLM2-135M"
    assert "- model: `HuggingFaceTB/SmolLM2-135M`\n" in hub.card


def test_the_pushed_adapter_gives_the_runs_logits(run, llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = lora_nb.push(run, "me/x", dry_run=True).folder
    tok = AutoTokenizer.from_pretrained(folder)
    ours = lora_nb.load_adapter(llama, run.adapter_dir).eval()
    dtype = ours.get_base_model().dtype  # lora_nb's dtype="auto": bf16 where the CPU has it, as the run trained
    pushed = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama, dtype=dtype), folder).eval()
    assert torch.equal(logits(pushed, tok), logits(ours, tok))
    plain = AutoModelForCausalLM.from_pretrained(llama, dtype=dtype).eval()
    assert not torch.equal(logits(pushed, tok), logits(plain, tok))


def test_merged_dry_run_loads_with_transformers_alone(run, llama):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = lora_nb.push(str(run.dir), "me/x-merged", merged=True, dry_run=True)
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "loss.png"} <= set(result.files)
    assert not any(name.startswith("adapter_") for name in result.files)
    assert ModelCard(result.card).data.library_name == "transformers"
    assert 'AutoModelForCausalLM.from_pretrained("me/x-merged")' in result.card
    tok = AutoTokenizer.from_pretrained(result.folder)
    merged = AutoModelForCausalLM.from_pretrained(result.folder).eval()
    ours = lora_nb.load_adapter(llama, run.adapter_dir).eval()
    assert merged.dtype == ours.get_base_model().dtype  # merged in the dtype the adapter computed in
    assert torch.allclose(logits(merged, tok).float(), logits(ours, tok).float(), atol=2e-2)


def test_a_peft_model_pushes_its_adapter(llama):
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    result = lora_nb.push(model, "me/x", dry_run=True, tokenizer=tok)
    assert {"README.md", "adapter_model.safetensors", "tokenizer.json"} <= set(result.files)
    assert "loss.png" not in result.files and "## Usage" in result.card


def test_no_token_is_one_line_before_anything_is_built(run, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    with pytest.raises(lora_nb.ConfigError) as e:
        lora_nb.push(run, "me/x")
    assert str(e.value) == f"push: {NO_TOKEN}."
    assert not list(tmp_path.glob("lora_nb-*"))  # no folder was built
    with pytest.raises(lora_nb.ConfigError, match=r"repo_id: is not a Hub repo id"):
        lora_nb.push(run, "not a repo", dry_run=True)


def test_cli_dry_run(run, capsys):
    from lora_nb.cli import main

    assert main(["push", str(run.dir), "me/x", "--dry-run"]) == 0
    assert "dry run:" in capsys.readouterr().out
    assert main(["push", str(run.dir), "bad id", "--dry-run"]) == 2
    assert "repo_id: is not a Hub repo id" in capsys.readouterr().err


def test_panel_pushes_the_last_run(run):
    from lora_nb.notebook.panel import Panel
    from lora_nb.notebook.session import Session

    session = Session()
    panel = Panel(session)
    panel.repo_id.value = "me/x"
    panel.push_dry.value = True
    panel.buttons["Push to Hub"].click()
    assert "no run in this session yet" in panel.status.value
    session.runs.append(run)
    panel.buttons["Push to Hub"].click()
    assert "dry run:" in panel.status.value and "## Recipe" in panel.code.value


def test_the_panel_uploads_in_a_thread_and_says_how_it_ended(run, monkeypatch):
    """An upload takes seconds to minutes: the button's callback returns at once (the kernel stays free),
    the button is greyed out meanwhile, and the outcome (here: no network) replaces "pushing…"."""
    import threading

    from lora_nb.notebook.panel import Panel
    from lora_nb.notebook.session import Session

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    session = Session()
    session.runs.append(run)
    panel = Panel(session)
    seen = []
    push = session.push

    def watched(*args, **kwargs):
        seen.append((threading.current_thread() is threading.main_thread(), panel.buttons["Push to Hub"].disabled,
                     panel.status.value))
        return push(*args, **kwargs)

    monkeypatch.setattr(session, "push", watched)
    panel.repo_id.value = "me/x"
    panel.buttons["Push to Hub"].click()
    panel.pushing.join(timeout=60)

    assert seen == [(False, True, seen[0][2])] and "pushing the last run to me/x…" in seen[0][2]
    assert "push: could not reach the Hugging Face Hub" in panel.status.value
    assert not panel.buttons["Push to Hub"].disabled


def test_a_run_training_in_the_background_is_not_pushed(llama, parity, tmp_path):
    """Its adapter would be read (or merged) mid-step: the run, its folder and its model are each refused
    in one line until it ends; then it pushes."""
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    run = lora_nb.train(model, tok, parity[0], steps=10_000, batch_size=4, background=True, progress=False,
                        output_dir=str(tmp_path / "bg"))
    try:
        for source in (run, str(run.dir), run.dir / "adapter", model):
            with pytest.raises(lora_nb.ConfigError, match=rf"run_or_model: is training in run {run.name}: stop it"):
                lora_nb.push(source, "me/x", dry_run=True)
    finally:
        run.stop()
        run.wait(timeout=120)
    assert run.status == "stopped"
    assert "adapter_model.safetensors" in lora_nb.push(run, "me/x", dry_run=True).files
