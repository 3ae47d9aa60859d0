"""A non-finite gradient stops the run before it reaches the weights, even while the loss is still finite
(lora_nb.training.callbacks.RunCallback: one fused norm over every adapter gradient per step)."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

import lora_nb


class Poison(TrainerCallback):
    """From step ``at`` on, one adapter gradient gets ``value`` in one element (the loss stays finite);
    keeps the adapter's weights as they were at the end of the step before."""

    def __init__(self, model, at: int, value: float):
        self.at, self.value, self.armed, self.before = at, value, False, None
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        name = sorted(self.params)[len(self.params) // 2]  # a layer in the middle, not the first or last
        self.params[name].register_hook(self.poison)

    def poison(self, grad):
        if not self.armed:
            return grad
        grad = grad.clone()
        grad.view(-1)[0] = self.value
        return grad

    def on_step_begin(self, args, state, control, **kw):
        self.armed = state.global_step + 1 >= self.at

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.at - 1:
            self.before = {n: p.detach().clone() for n, p in self.params.items()}


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_non_finite_gradient_stops_the_run_before_it_reaches_the_weights(llama, parity, in_tmp, capsys, value):
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    poison = Poison(model, at=3, value=value)
    run = lora_nb.train(model, tok, parity[0], steps=10, batch_size=4, progress=False, callbacks=[poison])
    out = capsys.readouterr().out
    assert run.status == "diverged", out
    assert "the gradient became inf or nan" in run.message and "finished" not in out
    assert all(torch.isfinite(p).all() for p in poison.params.values())
    for name, p in poison.params.items():  # the poisoned step's update never happened
        assert torch.equal(p.detach(), poison.before[name]), name



def test_a_huge_but_finite_gradient_is_not_a_divergence(llama, parity, in_tmp, capsys):
    """The fused norm's squares overflow fp32 above ~1.8e19: a gradient of 1e25 is finite and must not read as
    diverged. Clipping off: with it, transformers scales every gradient by max_norm / inf = 0 first. Where
    accelerate is older than 1.16, transformers' grad-norm logging (torch's clip_grad_norm_ with max_norm=inf)
    turns every gradient nan when the norm overflows: there the run does diverge, and must say so."""
    import accelerate
    from packaging.version import Version

    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    poison = Poison(model, at=3, value=1e25)
    run = lora_nb.train(model, tok, parity[0], steps=5, batch_size=4, progress=False, callbacks=[poison],
                        max_grad_norm=0)
    keeps = Version(accelerate.__version__) >= Version("1.16")  # its clip_grad_norm_ skips clipping at max_norm=inf
    assert run.status == ("finished" if keeps else "diverged"), capsys.readouterr().out
    assert all(torch.isfinite(p).all() for p in poison.params.values())
