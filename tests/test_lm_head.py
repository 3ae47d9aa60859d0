"""TRL's fused LM head projects only the labelled positions on a CPU while lora_nb trains
(lora_nb.hf.compat.labelled_positions_only): the same log-probabilities, loss and adapter gradients as
TRL's every-position path, each side forced whatever is installed. Where TRL has no such decision
(TRL 1.9 has no fused head) nothing is changed, and the stand-in tests below still force both sides."""

from __future__ import annotations

import json
import types

import pytest
import torch

import lora_nb
from lora_nb.hf import compat

fused = pytest.mark.skipif(compat.lm_head_switch() is None,
                           reason="this TRL has no fused LM head (TRL 1.9): the latest and colab jobs run this")


class Rows:
    """Counts the positions TRL's chunked LM head projects (a spy: the real function does the work)."""

    def __init__(self, utils):
        self.real, self.seen = utils._ChunkedLogProbFunction, []

    def apply(self, hidden, *args):
        self.seen.append(hidden.shape[0])
        return self.real.apply(hidden, *args)


def _model(llama):
    from trl.trainer.utils import add_fused_lm_head

    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, dropout=0.0, verbose=False)
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer does
    return model, tok


def _batch(tok):
    """Two rows of different lengths, padded; the first trains on its second half, the second on all."""
    ids = [tok("the quick brown fox jumps over the lazy dog again and again")["input_ids"],
           tok("hello there")["input_ids"]]
    width = max(map(len, ids))
    input_ids = torch.tensor([row + [tok.pad_token_id] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    labels = input_ids.masked_fill(mask == 0, -100)
    labels[0, : len(ids[0]) // 2] = -100
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _step(model, batch):
    model.zero_grad()
    out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@fused
def test_labelled_positions_only_gives_the_same_log_probs_loss_and_gradients(llama, monkeypatch):
    from trl.trainer import utils

    model, tok = _model(llama)
    batch = _batch(tok)
    rows = Rows(utils)
    monkeypatch.setattr(utils, "_ChunkedLogProbFunction", rows)
    every, every_grads = _step(model, batch)
    with compat.labelled_positions_only() as applied:
        only, only_grads = _step(model, batch)
    assert applied
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert rows.seen == [batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1), labelled]
    assert rows.seen[1] < rows.seen[0]
    for field in ("log_probs", "entropy"):
        torch.testing.assert_close(getattr(only, field), getattr(every, field), rtol=1e-5, atol=1e-6)
    assert torch.equal(only.is_top1, every.is_top1) and torch.equal(only.label_mask, every.label_mask)
    torch.testing.assert_close(only.loss, every.loss, rtol=1e-6, atol=0)
    assert every_grads.keys() == only_grads.keys() and every_grads
    for name, grad in every_grads.items():
        torch.testing.assert_close(only_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)


@fused
def test_a_batch_without_a_label_still_trains_to_a_zero_loss(llama):
    model, tok = _model(llama)
    batch = _batch(tok)
    batch["labels"][:] = -100
    with compat.labelled_positions_only() as applied:
        out, grads = _step(model, batch)
    assert applied and float(out.loss.detach()) == 0.0
    assert all(torch.all(g == 0) for g in grads.values())


@fused
def test_training_takes_the_same_steps_either_way_and_puts_trl_back(llama, parity, in_tmp, monkeypatch):
    """Real runs through lora_nb.train: with the switch, and with it forced off (as where TRL lacks it)."""
    from trl.trainer import utils

    original = utils._use_triton
    losses, seen = {}, {}
    for side in ("every position", "labelled only"):
        with monkeypatch.context() as patch:
            if side == "every position":
                patch.setattr(compat, "lm_head_switch", lambda utils=None: None)
            rows = Rows(utils)
            patch.setattr(utils, "_ChunkedLogProbFunction", rows)
            model, tok = lora_nb.load(llama)
            model = lora_nb.inject(model, r=4, verbose=False)
            run = lora_nb.train(model, tok, parity[0], steps=3, batch_size=4, progress=False, output_dir=side)
        losses[side] = [json.loads(line)["loss"] for line in (run.dir / "metrics.jsonl").read_text().splitlines()
                        if '"loss"' in line]
        seen[side] = sum(rows.seen)
        assert utils._use_triton is original
    assert len(losses["labelled only"]) == 3
    assert losses["labelled only"] == pytest.approx(losses["every position"], rel=1e-5)
    assert seen["labelled only"] < seen["every position"]


@fused
def test_a_failing_run_puts_trl_back(llama, parity, in_tmp):
    from transformers import TrainerCallback
    from trl.trainer import utils

    class Fail(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            assert utils._use_triton(torch.device("cpu"))  # the switch is on while training
            raise RuntimeError("boom")

    original = utils._use_triton
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    with pytest.raises(RuntimeError, match="boom"):
        lora_nb.train(model, tok, parity[0], steps=3, batch_size=4, progress=False, callbacks=[Fail()])
    assert utils._use_triton is original and not utils._use_triton(torch.device("cpu"))


def add_fused_lm_head(hidden_states):  # a stand-in with the decision TRL 1.x makes
    compact = _use_triton(hidden_states.device)  # noqa: F821 (never called: only its source is read)
    return compact


def test_the_switch_changes_cpu_only_where_trl_decides_with_it_and_puts_it_back():
    """Both sides forced with stand-in modules, whatever TRL is installed."""
    decide = lambda device: device.type == "cuda"  # noqa: E731 (TRL's answer with Triton)
    known = types.SimpleNamespace(add_fused_lm_head=add_fused_lm_head, _use_triton=decide)
    with compat.labelled_positions_only(known) as applied:
        assert applied
        assert known._use_triton(torch.device("cpu")) and known._use_triton(torch.device("cuda"))
        assert not known._use_triton(torch.device("meta"))
    assert known._use_triton is decide

    def other_layout(hidden_states):
        return hidden_states

    for stranger in (types.SimpleNamespace(add_fused_lm_head=other_layout, _use_triton=decide),
                     types.SimpleNamespace(_use_triton=decide),
                     types.SimpleNamespace(add_fused_lm_head=add_fused_lm_head)):
        with compat.labelled_positions_only(stranger) as applied:
            assert not applied and getattr(stranger, "_use_triton", decide) is decide
