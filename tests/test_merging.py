"""merge(): a standalone model that computes what the adapter did, also for QLoRA."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import lora_nb


def trained(llama, parity, tmp_path, quant=None):
    # fp32 compute: these check the merge's arithmetic, which bf16 rounding (dtype auto on a CPU
    # with bf16 instructions, and on GPUs) would hide at the tolerances below
    model, tok = lora_nb.load(llama, quant=quant, dtype="fp32")
    model = lora_nb.inject(model, r=8, verbose=False)
    # random batches, as the tolerances were measured with (a length-grouped order trains another adapter,
    # whose 4-bit merge error sits at 2.0e-2 rather than 8.6e-3)
    lora_nb.train(model, tok, parity[0], steps=4, lr=2e-2, warmup=0, batch_size=8, group_by_length=False,
                  output_dir=str(tmp_path / "run"))
    return model, tok


def logits(model, tok):
    ids = tok(["Is this number even or odd?\n\n4817", "hello world 12"], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        return model(**ids).logits


def rel_err(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


def assert_plain(folder):
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config.get("use_cache", True) is True, "a merged model generates with its KV cache (training turns it off)"
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "base_layer" in k]


def test_fp32_merge_matches_adapter(llama, parity, tmp_path):
    model, tok = trained(llama, parity, tmp_path)
    adapter = logits(model, tok)
    with model.disable_adapter():
        base = logits(model, tok)
    assert rel_err(adapter, base) > 1e-3  # the adapter changed something worth merging
    out = lora_nb.merge(model, tmp_path / "merged", tokenizer=tok)
    assert_plain(out)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert rel_err(adapter, logits(merged, tok)) < 1e-4
    assert (out / "tokenizer.json").exists()


def test_qlora_merge_uses_the_dequantised_weights(llama, parity, tmp_path):
    model, tok = trained(llama, parity, tmp_path, quant="4bit")
    adapter = logits(model, tok)
    out = lora_nb.merge(model, tmp_path / "merged")
    assert_plain(out)
    dequantised = rel_err(adapter, logits(AutoModelForCausalLM.from_pretrained(out), tok))
    assert dequantised < 2e-2
    original_dir = lora_nb.merge(model, tmp_path / "merged-original", into="original")
    original = rel_err(adapter, logits(AutoModelForCausalLM.from_pretrained(original_dir), tok))
    print(f"4-bit merge: dequantised {dequantised:.2e}, original checkpoint {original:.2e}")
    assert dequantised < original  # merging into the original weights drifts from what was trained


def test_merge_from_an_adapter_folder(llama, parity, tmp_path):
    model, tok = trained(llama, parity, tmp_path, quant="4bit")
    adapter = logits(model, tok)
    folder = lora_nb.save(model, tmp_path / "adapter", tokenizer=tok)
    assert json.loads((folder / "lora_nb.json").read_text())["quant"] == "4bit"
    out = lora_nb.merge(str(folder), tmp_path / "merged")  # re-quantises the base as trained, then dequantises
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert rel_err(adapter, logits(merged, tok)) < 2e-2
    assert (out / "tokenizer_config.json").exists()


def test_save_and_load_adapter_round_trip(llama, parity, tmp_path):
    model, tok = trained(llama, parity, tmp_path)
    folder = lora_nb.save(model, tmp_path / "adapter", tokenizer=tok)
    reloaded = lora_nb.load_adapter(llama, folder)
    assert rel_err(logits(model, tok), logits(reloaded, tok)) < 1e-6
    assert not any(p.requires_grad for p in reloaded.parameters())


def test_one_name_for_the_folder_written_and_one_meaning_of_base(llama, parity, tmp_path):
    """output_dir everywhere (the old folder=/out_dir= still work); base: a name or folder, a loaded model,
    or the (model, tokenizer) pair lora_nb.load returns."""
    model, tok = trained(llama, parity, tmp_path)
    expected = logits(model, tok)
    folder = lora_nb.save(model, output_dir=tmp_path / "adapter", tokenizer=tok)
    assert lora_nb.save(model, folder=tmp_path / "old", tokenizer=tok) == tmp_path / "old"
    for base in (lambda: llama, lambda: lora_nb.load(llama, dtype="fp32"),
                 lambda: lora_nb.load(llama, dtype="fp32")[0]):
        assert rel_err(expected, logits(lora_nb.load_adapter(base(), folder), tok)) < 1e-6
    loaded = lora_nb.load(llama, dtype="fp32")[0]
    merged = lora_nb.merge(str(folder), output_dir=tmp_path / "merged", base=loaded)  # its name_or_path
    assert rel_err(expected, logits(AutoModelForCausalLM.from_pretrained(merged), tok)) < 1e-5
    assert lora_nb.merge(str(folder), out_dir=tmp_path / "old-merged", base=llama).name == "old-merged"
    with pytest.raises(lora_nb.ConfigError, match=r"^output_dir: given twice, as output_dir and as out_dir"):
        lora_nb.merge(model, tmp_path / "x", out_dir=tmp_path / "y")


def test_bad_merge_arguments(llama, tmp_path):
    model, _ = lora_nb.load(llama)
    with pytest.raises(lora_nb.ConfigError, match="not a PeftModel"):
        lora_nb.merge(model, tmp_path / "x")
    with pytest.raises(lora_nb.ConfigError, match=r"into.*Allowed: dequantized, original"):
        lora_nb.merge(model, tmp_path / "x", into="quantized")
    with pytest.raises(lora_nb.ConfigError, match="adapter_config.json"):
        lora_nb.merge(str(tmp_path), tmp_path / "x")


def test_merge_never_overwrites(llama, parity, tmp_path):
    import shutil

    base = shutil.copytree(llama, tmp_path / "base")  # a copy: if the rule broke, only the copy is lost
    model, tok = lora_nb.load(str(base))
    model = lora_nb.inject(model, r=4, verbose=False)
    weights = (base / "model.safetensors").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(lora_nb.ConfigError, match="base model's own folder|not empty"):
            lora_nb.merge(model, base, overwrite=overwrite)
    assert (base / "model.safetensors").read_bytes() == weights
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    with pytest.raises(lora_nb.ConfigError, match=r"output_dir: the file exists.*overwrite=True"):
        lora_nb.merge(model, existing)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(lora_nb.ConfigError, match=r"output_dir: the folder is not empty.*overwrite=True"):
        lora_nb.merge(model, taken)
    assert existing.read_text() == "mine" and (taken / "keep.txt").read_text() == "mine"
    out = lora_nb.merge(model, taken, overwrite=True)  # asked for: written beside the user's file
    assert (out / "model.safetensors").exists() and (taken / "keep.txt").read_text() == "mine"
    with pytest.raises(lora_nb.ConfigError, match=r"output_dir: the folder is not empty"):
        lora_nb.save(model, taken)


def test_an_interrupted_merge_leaves_nothing_and_the_retry_succeeds(llama, tmp_path, monkeypatch):
    import transformers.modeling_utils as modeling

    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    real = modeling.safe_save_file

    def torn(tensors, filename, *args, **kwargs):  # Ctrl-C halfway through writing the weights
        real(tensors, filename, *args, **kwargs)
        with open(filename, "r+b") as f:
            f.truncate(f.seek(0, 2) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(modeling, "safe_save_file", torn)
    with pytest.raises(KeyboardInterrupt,
                       match=r"^output_dir: interrupted while writing .*merged; nothing was left behind"):
        lora_nb.merge(model, tmp_path / "merged", tokenizer=tok)
    assert list(tmp_path.iterdir()) == [], "no half-written folder, no temporary sibling"
    monkeypatch.setattr(modeling, "safe_save_file", real)
    out = lora_nb.merge(model, tmp_path / "merged", tokenizer=tok)  # the retry is not refused as "not empty"
    AutoModelForCausalLM.from_pretrained(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(modeling, "safe_save_file", torn)
    with pytest.raises(KeyboardInterrupt):
        lora_nb.merge(model, out, tokenizer=tok, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "the merge it was replacing is kept whole"
    assert list(tmp_path.iterdir()) == [out]
