"""load(): full precision, 8-bit and 4-bit (QLoRA) through bitsandbytes, for real, on the CPU."""

from __future__ import annotations

import pytest
import torch

import lora_nb
from lora_nb.core.errors import ConfigError


def test_full_precision_on_cpu(llama):
    model, tok = lora_nb.load(llama, dtype="fp32")
    assert model.dtype == torch.float32
    assert tok.pad_token is not None and tok.chat_template
    from lora_nb.runs.provenance import model_section

    assert model_section(model).quant is None and model_section(model).name == llama


@pytest.mark.parametrize("native_bf16", [True, False], ids=["cpu-with-bf16", "cpu-without"])
def test_auto_is_bf16_only_on_a_cpu_that_computes_it(llama, parity, tmp_path, monkeypatch, native_bf16):
    # the branch is the CPU's (AVX512-BF16 / AMX): force each, so both are checked on any machine
    from transformers import TrainerCallback

    from lora_nb.hf import devices

    monkeypatch.setattr(devices, "cpu_bf16_features", lambda: ["AMX"] if native_bf16 else [])
    model, tok = lora_nb.load(llama)
    assert model.dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    assert lora_nb.estimate(model, device="cpu").dtype == ("bf16" if native_bf16 else "fp32")
    model = lora_nb.inject(model, r=4, verbose=False)
    seen = {}

    class Settings(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            seen.update(bf16=args.bf16, use_cpu=args.use_cpu, sampler=kw["train_dataloader"].batch_sampler.sampler)

    run = lora_nb.train(model, tok, parity[0], steps=3, output_dir=str(tmp_path / "run"), callbacks=[Settings()],
                        progress=False)
    assert run.status == "finished" and all(torch.isfinite(torch.tensor(h["loss"])) for h in run.history if "loss" in h)
    assert seen["bf16"] is native_bf16 and seen["use_cpu"] is native_bf16  # mixed precision follows the weights
    assert type(seen["sampler"]).__name__ == "LengthGroupedSampler"  # group_by_length, on by default


def test_4bit_is_qlora_nf4_double_quant(llama):
    import bitsandbytes as bnb

    model, tok = lora_nb.load(llama, quant="4bit")
    q = model.model.layers[0].self_attn.q_proj
    assert isinstance(q, bnb.nn.Linear4bit)
    assert q.weight.quant_state.quant_type == "nf4"
    assert q.weight.quant_state.nested  # double quantisation
    assert model.model.norm.weight.dtype == torch.float32  # prepare_model_for_kbit_training upcast
    ids = tok(["hello"], return_tensors="pt")
    assert torch.isfinite(model(**ids).logits).all()


def test_8bit(llama):
    import bitsandbytes as bnb

    model, tok = lora_nb.load(llama, quant="8bit")
    assert isinstance(model.model.layers[0].mlp.down_proj, bnb.nn.Linear8bitLt)
    assert torch.isfinite(model(**tok(["hello"], return_tensors="pt")).logits).all()


def test_bad_settings_name_the_key(llama):
    with pytest.raises(ConfigError, match=r"model.quant.*Did you mean '4bit'"):
        lora_nb.load(llama, quant="4bits")
    with pytest.raises(ConfigError, match=r"model.dtype.*Allowed: auto, bf16, fp16, fp32"):
        lora_nb.load(llama, dtype="float64")
    with pytest.raises(ConfigError, match="is not a local folder with config.json"):
        lora_nb.load("/no/such/model-folder")


def test_remote_code_is_off_by_default():
    import inspect

    assert inspect.signature(lora_nb.load).parameters["trust_remote_code"].default is False


def _broken_copy(llama, tmp_path, change):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(llama, folder)
    change(folder)
    return str(folder)


def _truncate(path):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "config.json").unlink(), r"^model: is not a local folder with config\.json"),
    (lambda f: (f / "config.json").write_text('{"model_type": "no_such_family"}'),
     r"^model: has a config\.json that transformers cannot read \(.*no_such_family"),
    (lambda f: (f / "config.json").write_text("{not json"),
     r"^model: has a config\.json that transformers cannot read"),
    (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"),
     r"safetensors weights only.*never pickle \.bin"),
    (lambda f: _truncate(f / "model.safetensors"), r"^model: its safetensors weights are damaged or cut short"),
], ids=["no-config", "unknown-model-type", "garbage-config", "pickle-only", "truncated-weights"])
def test_a_broken_model_folder_is_one_line(llama, tmp_path, change, message):
    folder = _broken_copy(llama, tmp_path, change)
    with pytest.raises(ConfigError, match=message) as error:
        lora_nb.load(folder)
    assert "\n" not in str(error.value) and error.value.__cause__ is None


@pytest.mark.parametrize("model", [None, 3, "", ["a"]])
def test_load_needs_a_name_or_folder(model):
    with pytest.raises(ConfigError, match=r"^model: must be a Hub model name or a local folder"):
        lora_nb.load(model)


@pytest.mark.parametrize("device_map, message", [
    ("gpu", r"not a device map.*Allowed: auto"), (3.5, "not a device map"), ({"": "tpu"}, "not a device map"),
    ("cuda", "asks for a CUDA GPU, and torch sees none"), ("cuda:1", "asks for a CUDA GPU"), (0, "asks for a CUDA GPU"),
    ({"": 0}, "asks for a CUDA GPU")])
def test_device_maps_this_machine_cannot_take_are_refused_before_loading(llama, monkeypatch, device_map, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the branch is the machine's: force the no-GPU side
    with pytest.raises(ConfigError, match=rf"^model.device_map: {message}"):
        lora_nb.load(llama, device_map=device_map)


@pytest.mark.parametrize("device_map", [None, "cpu", "auto", {"": "cpu"}])
def test_device_maps_for_the_cpu_load(llama, device_map):
    model, _ = lora_nb.load(llama, dtype="fp32", device_map=device_map)
    assert model.device.type == "cpu"


def test_transformers_names_load_the_same(llama):
    from lora_nb.runs.provenance import model_section

    ours, _ = lora_nb.load(llama, quant="4bit", dtype="fp32")
    theirs, _ = lora_nb.load(llama, load_in_4bit=True, torch_dtype=torch.float32)
    assert model_section(theirs) == model_section(ours)
    assert model_section(theirs).quant == "4bit" and model_section(theirs).dtype == "fp32"
    assert type(theirs.model.layers[0].self_attn.q_proj) is type(ours.model.layers[0].self_attn.q_proj)
    with pytest.raises(ConfigError, match=r"^load_in_4bits: unknown keyword.*Did you mean 'quant' \(load_in_4bit in"):
        lora_nb.load(llama, load_in_4bits=True)
    with pytest.raises(ConfigError, match=r"^quant: given twice, as quant='8bit' and load_in_4bit=True: keep one"):
        lora_nb.load(llama, quant="8bit", load_in_4bit=True)
