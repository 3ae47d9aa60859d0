"""4-bit results do not depend on the CPU.

On CPUs with AVX512-BF16, bitsandbytes repacks a Linear4bit weight into a CPU-only layout on its
first inference forward; read later as NF4 (training, merging) it gives garbage, and on layers
narrower than a quantisation block it crashes. These tests force that branch on any machine:
they switch bitsandbytes' per-layer AVX512-BF16 flag on, or apply its repack (plain torch)
themselves, so the suite checks both code paths whatever CPU it lands on.
"""

from __future__ import annotations

import pytest
import torch

import lora_nb

bnb = pytest.importorskip("bitsandbytes")
from bitsandbytes.functional import _convert_weight_packed_for_cpu  # noqa: E402


def layers4(model):
    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def claim_avx512_bf16(model):
    """Make every 4-bit layer take the AVX512-BF16 branch, as bitsandbytes does on such a CPU."""
    for layer in layers4(model):
        layer.support_avx512bf16_for_cpu = True


def repack(model):
    """What bitsandbytes does to every layer at the first inference on an AVX512-BF16 CPU."""
    for layer in layers4(model):
        w = layer.weight
        w.data, w.quant_state = _convert_weight_packed_for_cpu(w.data, w.quant_state)


def packed(model):
    return [getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers4(model)]


@pytest.fixture(scope="module")
def wide(tiny):
    """The demo-size Llama: every 4-bit layer is wide enough for bitsandbytes' CPU layout."""
    return str(tiny("llama", "demo"))


def logits(model, tok):
    ids = tok(["Is this number even or odd?\n\n4817", "hello world 12"], return_tensors="pt", padding=True)
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(**ids).logits
    model.train(was)
    return out


def rel_err(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


def test_the_forced_flag_really_takes_the_repack_branch(wide):
    model, tok = lora_nb.load(wide, quant="4bit")
    claim_avx512_bf16(model)
    model.eval()
    try:  # not through lora_nb: bitsandbytes repacks (the kernel after it may not exist on this CPU)
        with torch.no_grad():
            model(**tok(["12"], return_tensors="pt"))
    except Exception:
        pass
    assert any(packed(model))


def test_generate_keeps_the_standard_layout_on_any_cpu(wide):
    model, tok = lora_nb.load(wide, quant="4bit")
    assert layers4(model) and not any(m.support_avx512bf16_for_cpu for m in layers4(model))
    claim_avx512_bf16(model)  # as a model loaded outside lora_nb would be on such a CPU
    lora_nb.generate(model, tok, "Is 7 even or odd?", max_new_tokens=3)
    assert not any(packed(model))


def test_generate_on_a_narrow_model_with_the_repack_branch(llama):
    # 32-wide layers: bitsandbytes' repack fails there ("shape '[32, 0]' is invalid")
    model, tok = lora_nb.load(llama, quant="4bit")
    claim_avx512_bf16(model)
    answer = lora_nb.generate(model, tok, "Is 7 even or odd?", max_new_tokens=3)
    assert isinstance(answer, str)


def train_losses(model, tok, rows, tmp_path, name):
    model = lora_nb.inject(model, r=8, dropout=0.0, verbose=False)
    run = lora_nb.train(model, tok, rows, steps=6, lr=2e-3, warmup=0, batch_size=8, max_length=64,
                        output_dir=str(tmp_path / name), progress=False)
    return model, [h["loss"] for h in run.history if "loss" in h]


def test_training_after_a_repack_learns_as_without(wide, parity, tmp_path):
    clean, tok = lora_nb.load(wide, quant="4bit")
    _, expected = train_losses(clean, tok, parity[0], tmp_path, "clean")
    model, tok = lora_nb.load(wide, quant="4bit")
    repack(model)  # inference happened before training, on an AVX512-BF16 CPU
    _, got = train_losses(model, tok, parity[0], tmp_path, "repacked")
    assert not any(packed(model))
    # bitsandbytes' inverse restores the 4-bit codes exactly; block scales keep a bf16 rounding
    assert got == pytest.approx(expected, rel=2e-2)


def test_merge_after_a_repack_matches_the_adapter(wide, parity, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = lora_nb.load(wide, quant="4bit")
    model, _ = train_losses(model, tok, parity[0], tmp_path, "run")
    adapter = logits(model, tok)
    repack(model)  # a generate/compare on an AVX512-BF16 CPU before the merge
    out = lora_nb.merge(model, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    # 1.29 when the packed layout is read as NF4; bf16 rounding alone gave up to 0.024 (torch 2.6 with
    # bitsandbytes 0.49, the lowest CI job)
    assert rel_err(adapter, logits(merged, tok)) < 5e-2
