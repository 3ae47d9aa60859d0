"""Loading a model and its tokenizer (dtype, quantisation, device map), and the 4-bit layout bitsandbytes
keeps on a CPU.

Shared with exported scripts (:mod:`lora_nb.export.script`): standard library and the HF stack only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .devices import QUANTISED_PARAMS, process_device_map
from .folders import expand_user

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_model_and_tokenizer(
    name: str, *, dtype: torch.dtype, quantization: dict[str, Any] | None = None,
    device_map: str | dict[str, Any] | None = None, trust_remote_code: bool = False,
    model_class: str = "AutoModelForCausalLM",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (ready for LoRA) and its tokenizer, loaded from safetensors.

    ``dtype`` is a torch dtype (:func:`resolve_dtype`); ``quantization`` holds ``BitsAndBytesConfig``
    keywords (4-bit computes in ``dtype``) or None; ``model_class`` names the transformers class.
    A quantised model is loaded by :func:`load_quantized_model`, a full-precision one by :func:`load_model`;
    every 4-bit layer keeps the NF4 layout (:func:`pin_4bit_layout`, for a checkpoint saved in 4-bit too),
    and a tokenizer without a pad token pads with eos (:func:`load_tokenizer`).

    Example:
        >>> from lora_nb.hf.devices import resolve_dtype
        >>> model, tok = load_model_and_tokenizer("my-model", dtype=resolve_dtype("auto"),
        ...                                       quantization={"load_in_8bit": True})
    """
    where = dict(dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code, model_class=model_class)
    if quantization:
        model = load_quantized_model(name, quantization=quantization, **where)
    else:
        model = pin_4bit_layout(load_model(name, **where))
    return model, load_tokenizer(name, trust_remote_code=trust_remote_code)


def load_model(name: str, *, dtype: torch.dtype, device_map: str | dict[str, Any] | None = None,
               trust_remote_code: bool = False, model_class: str = "AutoModelForCausalLM") -> PreTrainedModel:
    """The model in full precision (``dtype``), from safetensors, on this process's device (:func:`process_device_map`).

    ``model_class`` names the transformers class.

    Example:
        >>> from lora_nb.hf.devices import resolve_dtype
        >>> model = load_model("my-model", dtype=resolve_dtype("auto"))
    """
    import transformers

    name = expand_user(name)  # ~/models/x, $MODELS/x; a Hub name stays as it is
    return getattr(transformers, model_class).from_pretrained(
        name, dtype=dtype, device_map=process_device_map(device_map), trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )


def load_quantized_model(name: str, *, dtype: torch.dtype, quantization: dict[str, Any],
                         device_map: str | dict[str, Any] | None = None, trust_remote_code: bool = False,
                         model_class: str = "AutoModelForCausalLM") -> PreTrainedModel:
    """The model quantised by bitsandbytes (``quantization``: ``BitsAndBytesConfig`` keywords), ready for LoRA;
    4-bit layers compute in ``dtype``.

    Ready: PEFT's ``prepare_model_for_kbit_training``, every 4-bit layer in
    the NF4 layout (:func:`pin_4bit_layout`), and its full-precision tensors no longer mapping the
    checkpoint file (:func:`release_checkpoint_memory`).

    Example:
        >>> from lora_nb.hf.devices import resolve_dtype
        >>> model = load_quantized_model("my-model", dtype=resolve_dtype("auto"),
        ...                              quantization={"load_in_4bit": True})
    """
    import transformers

    name = expand_user(name)  # ~/models/x, $MODELS/x; a Hub name stays as it is
    compute = {"bnb_4bit_compute_dtype": dtype} if quantization.get("load_in_4bit") else {}
    model = getattr(transformers, model_class).from_pretrained(
        name, dtype=dtype, quantization_config=transformers.BitsAndBytesConfig(**quantization, **compute),
        device_map=process_device_map(device_map), trust_remote_code=trust_remote_code, use_safetensors=True,
    )
    pin_4bit_layout(model)
    if "bnb_4bit_quant_storage" not in quantization:  # sharded QLoRA keeps one dtype per layer (TRL does the same)
        from peft import prepare_model_for_kbit_training

        # gradient checkpointing is the trainer's to decide, from the memory a step needs (needs_checkpointing)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return release_checkpoint_memory(model)


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer; one without a pad token pads with its eos token.

    Example:
        >>> load_tokenizer("my-model").pad_token
        '<pad>'
    """
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(expand_user(name), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def release_checkpoint_memory(model: torch.nn.Module) -> torch.nn.Module:
    """Give the full-precision tensors of a quantised ``model`` memory of their own, so the checkpoint file
    it was loaded from is no longer mapped, and hand freed heap back to the OS; returns ``model``.

    Why: safetensors weights load as views of the memory-mapped file. The quantised layers get new
    memory, but the tensors left in full precision (embeddings, norms, the LM head) stay views of
    the file when it already holds them in the loading dtype (an fp32 checkpoint loaded in fp32),
    and those views keep the whole file mapped, every page of it read while quantising: the
    process stays as large as the full-precision model (SmolLM2-135M shape, fp32 file, 4-bit:
    1.12 GB resident after a forward, 0.70 GB with this). The copy costs the size of those tensors
    once (110 MB and 0.4 s there). Quantised weights (``Params4bit``, ``Int8Params``) already own
    their memory, and tensors on a GPU map no file: both are left alone.

    Example:
        >>> import torch
        >>> release_checkpoint_memory(torch.nn.Linear(4, 4)).weight.shape
        torch.Size([4, 4])
    """
    import ctypes
    import gc

    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type == "cpu" and type(tensor).__name__ not in QUANTISED_PARAMS:
            tensor.data = tensor.data.clone()
    gc.collect()
    try:  # glibc keeps the quantiser's freed temporaries; elsewhere (macOS, Windows, musl) there is nothing to call
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return model


def pin_4bit_layout(model: torch.nn.Module) -> torch.nn.Module:
    """Keep every bitsandbytes 4-bit layer of ``model`` in the standard NF4 layout, on any CPU.

    Why: on CPUs with AVX512-BF16, bitsandbytes (0.49+) repacks a ``Linear4bit`` weight into a
    CPU-only layout on its first forward in eval mode without grad (any generation) and keeps it
    so. Training, merging (dequantising) and narrow layers then read that layout as if it were
    NF4: the demo stops learning, merges come out garbage, a 32-wide layer crashes. So lora_nb
    (and its exported scripts) switch the repack off for every 4-bit layer (load, inject,
    load_adapter, generate, merge) and undo a repack already done with bitsandbytes' own
    inverse, so results do not depend on the CPU. Cost: inference on those CPUs takes the
    generic 4-bit kernel. A model without 4-bit layers is left alone. Returns ``model``.

    Example:
        >>> import torch, bitsandbytes as bnb
        >>> layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32)
        >>> pin_4bit_layout(torch.nn.Sequential(layer))[0].support_avx512bf16_for_cpu
        False
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            weight, state = module.weight, getattr(module.weight, "quant_state", None)
            if getattr(state, "packing_format_for_cpu", False):
                from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

                weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
    return model
