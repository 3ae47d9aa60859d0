"""lora_nb.estimate: each part is counted right, and the whole is within 15% of measured training memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import lora_nb
from lora_nb.core.errors import ConfigError
from lora_nb.model.memory import GB, GIB, GPUS, estimate

PROBE = Path(__file__).with_name("memory_probe.py")


def _llama(hidden: int, mlp: int, layers: int, heads: int):
    """A LLaMA-shaped config (the LLaMA paper's table 2: dimension, heads, layers; the FFN width of its
    released checkpoints), built here: nothing is downloaded, the estimate builds it on the meta device."""
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=heads, vocab_size=32000)


def _seven_b():
    return _llama(4096, 11008, 32, 32)


@pytest.fixture(scope="module")
def hundred_m(tmp_path_factory):
    """A 71M-parameter model (SmolLM2-135M's widths, 12 layers) with random weights, saved once."""
    import torch
    import transformers

    from lora_nb.demo.tiny import tiny_tokenizer

    folder = tmp_path_factory.mktemp("m71")
    config = transformers.LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=12,
                                      num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(tiny_tokenizer()).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def mixed_rows(tmp_path_factory):
    """32 texts of 8 to 193 tokens (most under 100; TRL adds an EOS), as a jsonl file: far shorter than max_length."""
    import random

    random.seed(1)
    words = ["alpha", "beta", "gamma", "delta", "one", "two", "three", "red", "blue", "the", "a", "of"]
    rows = [{"text": " ".join(random.choice(words) for _ in range(random.randint(5, 40)))} for _ in range(31)]
    rows.append({"text": " ".join(random.choice(words) for _ in range(90))})
    random.shuffle(rows)
    path = tmp_path_factory.mktemp("mixed") / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _measured(folder: str, batch: int, length: int, checkpointing: bool, *options: str, repeats: int = 1) -> int:
    """The peak's growth over the baseline in a fresh process; with ``repeats``, the median of that many."""
    peaks = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, str(PROBE), folder, str(batch), str(length), str(int(checkpointing)),
                              *options], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        peaks.append(figures["peak"] - figures["base"])
    return sorted(peaks)[len(peaks) // 2]


@pytest.mark.parametrize("checkpointing, quant", [(False, None), (True, None), (False, "4bit")])
def test_estimate_is_within_15_percent_of_the_memory_training_takes(hundred_m, checkpointing, quant):
    """QLoRA's peak on a CPU moves from run to run of the same steps (1.10-1.29 GiB over 16 runs here, against
    1.10 GiB estimated; LoRA's within 5%): its median of three is the measurement."""
    predicted = estimate(hundred_m, quant=quant, batch_size=4, max_length=128, device="cpu",
                         gradient_checkpointing=checkpointing).total()
    measured = _measured(hundred_m, 4, 128, checkpointing, *(["--quant", quant] if quant else []),
                         repeats=3 if quant else 1)

    assert abs(predicted - measured) / measured < 0.15, (predicted / 2**20, measured / 2**20)


def test_on_mixed_length_data_the_estimate_counts_the_longest_batch_not_max_length(hundred_m, mixed_rows):
    """The collator pads a batch to its longest example, and the length-grouped sampler (train's default)
    trains the batch with the longest example first: two steps reach the run's peak."""
    predicted = estimate(hundred_m, data=mixed_rows, batch_size=4, max_length=512, device="cpu",
                         gradient_checkpointing=False)
    measured = _measured(hundred_m, 4, 512, False, "--data", mixed_rows)
    full_length = estimate(hundred_m, batch_size=4, max_length=512, device="cpu", gradient_checkpointing=False)

    assert predicted.length == 194 and predicted.examples == 4
    assert abs(predicted.total() - measured) / measured < 0.15, (predicted.total() / 2**20, measured / 2**20)
    assert full_length.total() > 1.5 * measured  # what assuming every batch is max_length long would say


def test_estimate_is_within_25_percent_on_the_embedded_model(llama):
    """At 0.2 M parameters the peak is mostly the runtime's own memory, which moves with the stack: against
    the same 90 MiB estimate, 89-92 MiB measured on torch 2.13 / Python 3.11 and torch 2.11 / Python 3.13
    (the CI jobs), 57 MiB on torch 2.6 / Python 3.10. (Measured before the probe imported trackio at its
    baseline, as TRL's model card does at the first checkpoint: 95-101 and 107-122 MiB.) The 100M model above
    holds the 15% promise on every stack."""
    predicted = estimate(llama, batch_size=4, max_length=128, device="cpu", gradient_checkpointing=False).total()
    measured = _measured(llama, 4, 128, False)

    assert abs(predicted - measured) / measured < 0.25, (predicted / 2**20, measured / 2**20)


@pytest.mark.parametrize("targets", ["all-linear", "attention", ["q_proj", "v_proj"]])
def test_adapter_counts_the_parameters_peft_trains(llama, targets):
    model, _ = lora_nb.load(llama)
    predicted = estimate(llama, r=8, targets=targets, device="cpu")
    trainable = sum(p.numel() for p in lora_nb.inject(model, r=8, targets=targets).parameters() if p.requires_grad)

    assert predicted.lora_params == trainable
    assert predicted.adapter + predicted.optimizer == 16 * trainable  # fp32 weight, its gradient, AdamW's two moments


@pytest.mark.parametrize("optim, adapter_dtype", [("adamw_torch", "fp32"), ("adamw_torch_fused", "bf16"),
                                                  ("adamw_bnb_8bit", "fp32"), ("paged_adamw_8bit", "bf16"),
                                                  ("paged_adamw_32bit", "bf16")])
def test_optimizer_state_is_what_the_optimizer_transformers_builds_keeps(llama, tmp_path, optim, adapter_dtype):
    """A real step of the optimizer TrainingArguments(optim=...) picks, on the injected adapter (cast to
    bf16 as the QLoRA paper's code casts its LoRA layers). On a CPU a paged optimizer pages nothing."""
    import torch
    from transformers import Trainer, TrainingArguments

    model, _ = lora_nb.load(llama, dtype="fp32")
    model = lora_nb.inject(model, r=64, targets="all-linear")  # 8-bit state for tensors of 4,096+ elements
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.to(torch.bfloat16 if adapter_dtype == "bf16" else torch.float32)
        p.grad = torch.ones_like(p)
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(TrainingArguments(output_dir=str(tmp_path), optim=optim))
    optimizer = cls(params, **kwargs)
    optimizer.step()
    state = [t.numel() * t.element_size() for s in optimizer.state.values() for key, t in s.items()
             if torch.is_tensor(t) and t.dim() > 0 and not key.startswith("qmap")]  # the maps: one, shared
    predicted = estimate(llama, r=64, targets="all-linear", optim=optim, adapter_dtype=adapter_dtype, device="cpu")

    assert predicted.optimizer == sum(state) and predicted.paged == 0
    # 32-bit state: 8 bytes a parameter; 8-bit: less, though tensors under 4,096 elements keep 32-bit state
    assert predicted.optimizer < (8 if "8bit" in optim else 9) * predicted.lora_params
    assert predicted.adapter == 2 * sum(p.numel() * p.element_size() for p in params)
    assert estimate(llama, r=64, optim=optim, adapter_dtype=adapter_dtype, device="gpu").paged == 0  # all < 100,000


def test_the_qlora_papers_two_claims_hold_with_its_settings():
    """QLoRA (Dettmers et al. 2023): "finetune a 65B parameter model on a single 48GB GPU", and Guanaco 33B
    on a 24 GB consumer GPU. Its settings (artidoro/qlora, qlora.py): NF4 with double quantisation, LoRA
    r=64 on every linear layer, the LoRA layers cast to bf16, paged_adamw_32bit, batch 1, gradient
    checkpointing; the memory breakdown is for sequences of 512 tokens. GB as the GPU makers count: 10⁹ bytes."""
    paper = dict(quant="4bit", r=64, targets="all-linear", batch_size=1, max_length=512, gradient_checkpointing=True,
                 adapter_dtype="bf16", optim="paged_adamw_32bit", device="gpu")
    llama_65b, llama_33b = _llama(8192, 22016, 80, 64), _llama(6656, 17920, 60, 52)

    assert estimate(llama_65b, **paper).fits("48 GB") == "yes, with gradient checkpointing"
    assert estimate(llama_33b, **paper).fits("24 GB") == (
        "yes, with gradient checkpointing and the optimizer state paged to CPU memory")  # "paged optimizers provide
    # enough memory to make these models fit" (the paper's memory breakdown)
    fp32_adamw = estimate(llama_65b, **{**paper, "adapter_dtype": "fp32", "optim": "adamw_torch"})
    assert fp32_adamw.fits("48 GB") == "no" and fp32_adamw.fits("48 GiB") == "yes, with gradient checkpointing"
    assert 48 * GB < fp32_adamw.total() < 48 * GIB  # lora_nb's defaults: 50.4 GB = 46.9 GiB


def test_data_given_as_token_counts_sets_the_longest_batch():
    counts = estimate(_seven_b(), data=[120, 700, 64], batch_size=4, max_length=1024, device="gpu")
    full = estimate(_seven_b(), batch_size=3, max_length=700, device="gpu")

    assert (counts.examples, counts.length) == (3, 700) and counts.layers == full.layers
    assert estimate(_seven_b(), data=[5000], max_length=1024, device="gpu").length == 1024  # TRL cuts it there
    assert "the data's longest example; max_length 1024" in str(counts)


def test_data_under_its_own_column_names_is_counted_through_its_mapping(llama):
    """As train() reads it: the same token counts as the renamed rows; without the mapping, the error names it."""
    tok = lora_nb.load(llama)[1]
    own = [{"question": "what is " + "two plus two " * n, "answer": "four " * n} for n in (1, 9, 3)]
    renamed = [{"instruction": row["question"], "output": row["answer"]} for row in own]
    mapped = estimate(llama, data=own, columns="question:instruction,answer:output", tokenizer=tok, device="cpu")

    assert (mapped.length, mapped.examples) == (estimate(llama, data=renamed, tokenizer=tok, device="cpu").length, 3)
    assert mapped.length > estimate(llama, data=own[:1], columns="question:instruction,answer:output",
                                    tokenizer=tok, device="cpu").length
    with pytest.raises(ConfigError, match="set data.columns: {instruction: question, output: answer}"):
        estimate(llama, data=own, tokenizer=tok, device="cpu")


@pytest.mark.parametrize("size, expected", [("24 GB", 24 * 10**9), ("24GiB", 24 * 2**30), ("1.5 gb", 15 * 10**8),
                                            (16 * 10**9, 16 * 10**9)])
def test_memory_sizes_take_their_unit(size, expected):
    from lora_nb.model.memory import memory_bytes

    assert memory_bytes(size) == expected


def test_a_size_without_its_unit_is_refused():
    with pytest.raises(ConfigError, match=r"memory: must be bytes or a size with its unit \(got '48'\)"):
        estimate(_seven_b(), device="gpu").fits("48")


@pytest.mark.parametrize("quant", [None, "4bit", "8bit"])
def test_weights_match_the_loaded_models_footprint(llama, quant):
    model, _ = lora_nb.load(llama, quant=quant)
    predicted = estimate(llama, quant=quant, device="cpu").weights
    loaded = sum(p.numel() * p.element_size() for p in model.parameters())  # 4-bit: packed bytes

    assert abs(predicted - loaded) / loaded < 0.05, (predicted, loaded)


def test_a_loaded_model_is_estimated_as_it_was_loaded(llama):
    model, _ = lora_nb.load(llama, quant="4bit")

    assert estimate(model, device="cpu").quant == "4bit"
    assert estimate(model, device="cpu").weights == estimate(llama, quant="4bit", device="cpu").weights


def test_checkpointing_and_4bit_are_what_make_7b_fit_a_t4():
    t4 = GPUS["T4 16 GB"]

    assert estimate(_seven_b(), device="gpu").fits(t4) == "no"  # bf16 weights alone are 12.6 GiB
    assert estimate(_seven_b(), quant="4bit", device="gpu").fits(t4) == "yes, with gradient checkpointing"
    assert estimate(_seven_b(), quant="4bit", batch_size=1, max_length=512, device="gpu").fits(t4) == "yes"


def test_parts_scale_as_they_should():
    small = estimate(_seven_b(), batch_size=1, max_length=512, device="gpu")
    double = estimate(_seven_b(), batch_size=2, max_length=512, device="gpu")
    rank = estimate(_seven_b(), batch_size=1, max_length=512, r=32, device="gpu")

    assert double.layers[False] == 2 * small.layers[False] and double.weights == small.weights
    assert small.layers[True] < small.layers[False] / 10
    assert rank.adapter == 2 * small.adapter
    assert estimate(_seven_b(), quant="4bit", device="gpu").weights < small.weights / 3


def test_the_table_names_every_part_and_the_gpus():
    text = str(estimate(_seven_b(), quant="4bit", device="gpu"))

    for part in ("weights", "LoRA adapter", "optimizer state", "activations", "LM head", "total", "GiB", "GB",
                 "T4 16 GB", "A100/H100 80 GB"):
        assert part in text


@pytest.mark.parametrize("kwargs, key", [({"quant": "3bit"}, "quant"), ({"batch_size": 0}, "batch_size"),
                                         ({"device": "tpu"}, "device"), ({"r": 1.5}, "r"), ({"optim": "adam"}, "optim"),
                                         ({"adapter_dtype": "int8"}, "adapter_dtype")])
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        estimate(_seven_b(), **kwargs)


def test_lora_nb_estimate_stays_the_function_after_its_module_is_imported():
    import lora_nb.model.memory  # noqa: F401 - importing a submodule sets it as an attribute of the package

    assert callable(lora_nb.estimate) and lora_nb.estimate is lora_nb.model.memory.estimate
    assert callable(lora_nb.estimate)  # a second lookup too (a module named estimate shadowed it)


def test_targets_are_a_discovery_with_memory_lines(llama):
    from lora_nb.model.targets import targets_with_memory

    planned = targets_with_memory(llama, r=4)

    assert planned.roles == lora_nb.discover(llama, r=4).roles  # what code using a Discovery reads still works
    assert "QLoRA (4-bit)" in str(planned) and "Fits T4 16 GB" in str(planned)


@pytest.mark.parametrize("device, kind", [("cuda", "gpu"), ("cuda:0", "gpu"), ("cpu", "cpu"), ("gpu", "gpu")])
def test_torch_device_names_are_taken(device, kind):
    import torch

    assert estimate(_seven_b(), device=device).total() == estimate(_seven_b(), device=kind).total()
    assert estimate(_seven_b(), device=torch.device(device.replace("gpu", "cuda"))).device == kind
    with pytest.raises(ConfigError, match=r"^device: Apple's MPS memory is not modelled.*device='cpu'"):
        estimate(_seven_b(), device="mps")


def test_library_names_estimate_the_same():
    ours = estimate(_seven_b(), quant="4bit", dtype="bf16", targets=["q_proj", "v_proj"], batch_size=2,
                    max_length=512, gradient_checkpointing=True, device="gpu")
    theirs = estimate(_seven_b(), load_in_4bit=True, torch_dtype="bfloat16", target_modules=["q_proj", "v_proj"],
                      per_device_train_batch_size=2, max_seq_length=512, activation_checkpointing=True, device="cuda")
    assert theirs == ours
