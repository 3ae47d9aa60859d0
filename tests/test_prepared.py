"""A rerun trains on the tokenised rows of the kernel's previous run where nothing that shapes them
changed (lora_nb.training.prepared), with the same losses as tokenising afresh; any change tokenises again."""

from __future__ import annotations

import pytest

import lora_nb
from lora_nb.training import prepared

SETTINGS = dict(steps=3, batch_size=4, max_length=64, lr=1e-3, progress=False)


@pytest.fixture(autouse=True)
def nothing_kept():
    prepared.forget()
    yield
    prepared.forget()


def train(llama, rows, tmp_path, name, tok=None, **changes):
    model, loaded = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)  # the same initialisation each time (its seed)
    return lora_nb.train(model, tok or loaded, rows, output_dir=str(tmp_path / name), **{**SETTINGS, **changes})


def losses(run):
    return [h["loss"] for h in run.history if "loss" in h]


def test_a_rerun_reuses_the_tokenised_rows_and_trains_the_same(llama, parity, tmp_path):
    first = train(llama, parity[0], tmp_path, "a", eval=0.25)
    again = train(llama, [dict(r) for r in parity[0]], tmp_path, "b", eval=0.25)  # equal rows, another list

    assert (first.reused_rows, again.reused_rows) == (False, True)
    assert losses(again) == pytest.approx(losses(first), rel=1e-6) and len(losses(first)) == 3
    prepared.forget()
    fresh = train(llama, parity[0], tmp_path, "c", eval=0.25)
    assert not fresh.reused_rows and losses(fresh) == pytest.approx(losses(again), rel=1e-6)


@pytest.mark.parametrize("change", ["data", "max_length", "chat_template", "eval"])
def test_anything_that_shapes_the_tokens_tokenises_again(llama, parity, tmp_path, change):
    from transformers import AutoTokenizer

    rows, changes, tok = [dict(r) for r in parity[0]], {}, None
    train(llama, parity[0], tmp_path, "a")
    if change == "data":
        rows[3]["output"] += " (edited)"
    elif change == "max_length":
        changes["max_length"] = 48
    elif change == "chat_template":
        tok = AutoTokenizer.from_pretrained(llama)
        tok.chat_template = tok.chat_template.replace("<|end|>", "<|end|>\n")
        assert tok.chat_template != AutoTokenizer.from_pretrained(llama).chat_template
    else:
        changes["eval"] = 0.25
    run = train(llama, rows, tmp_path, "b", tok=tok, **changes)
    assert not run.reused_rows and run.status == "finished"
