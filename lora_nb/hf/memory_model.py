"""What one training step holds in activations, and whether gradient checkpointing is needed to fit.

Shared with exported scripts (:mod:`lora_nb.export.script`): standard library and the HF stack only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .devices import compute_dtype

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig


# What one training step holds, per token, in the activation dtype (lora_nb.model.memory explains it).
# Without gradient checkpointing each decoder layer keeps the tensors autograd saves: about 14
# hidden-size vectors (norm inputs and outputs, the LoRA dropout copies of each adapted input, q
# before and after RoPE, the attention output), 4 of the key/value width and 5 of the MLP width
# (gate, up, their activation and product, the down input's copy). With it, each layer keeps its
# input, and one layer at a time is rebuilt in full. TRL scores the LM head in tiles of up to 4096
# tokens × 32768 vocabulary entries. Per device, as measured: on the CPU (peak RSS growth of real
# steps, tests/test_memory.py) the allocator holds about 1.4× the saved tensors, 12 hidden-size
# vectors per checkpointed layer, and 39 bytes per head-tile element (its fp32 torch ops); on a GPU
# (torch.cuda.max_memory_allocated, benchmarks/gpu.sh) the counts as they are and the tile's bf16
# buffer with its fp32 reductions, about 3 bytes an element. On a CPU training in bf16 (autocast
# over bf16 weights, fp32 adapters) the layers keep fp32 and bf16 copies side by side: per element
# counted at 2 bytes they hold about 1.35× the fp32 counts and 4 hidden-size vectors per checkpointed
# layer, and the head tile about 33 bytes an element — fitted to seven measured runs (full-length
# 64/128/256 tokens with and without checkpointing, mixed-length rows with padding; all within ±6.2%)
# since TRL's head projects only the positions that carry loss there too (lora_nb.hf.compat).
ACTIVATIONS = {
    "cpu": {"hidden": 20, "kv": 6, "mlp": 7, "checkpointed": 12, "head_bytes": 39.0},
    "cpu-bf16": {"hidden": 27, "kv": 8, "mlp": 9, "checkpointed": 4, "head_bytes": 33.0},
    "gpu": {"hidden": 14, "kv": 4, "mlp": 5, "checkpointed": 1, "head_bytes": 3.0},
}


HEAD_TILE = (4096, 32768)


def model_dims(config: PretrainedConfig) -> dict[str, int]:
    """The sizes of a decoder that set its activation memory, from its transformers config.

    Example:
        >>> from transformers import LlamaConfig
        >>> model_dims(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        ...                        num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
        {'hidden': 64, 'layers': 2, 'heads': 4, 'kv': 32, 'mlp': 128, 'vocab': 100}
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden, heads = text.hidden_size, text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    mlp = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
    per_expert, active = getattr(text, "moe_intermediate_size", None), getattr(text, "num_experts_per_tok", None)
    if per_expert and active:  # a token passes through its top-k experts (and a shared one, where there is)
        mlp = per_expert * active + (getattr(text, "shared_expert_intermediate_size", None) or 0)
    kv = (getattr(text, "num_key_value_heads", None) or heads) * head_dim
    return dict(hidden=hidden, layers=text.num_hidden_layers, heads=heads, kv=kv, mlp=mlp, vocab=text.vocab_size)


def activation_kind(gpu: bool, dtype_bytes: int) -> str:
    """The key of :data:`ACTIVATIONS` (and of lora_nb.model.memory's reserve) for a step on a GPU, or on a
    CPU in fp32 or in a half dtype, where autocast keeps copies in both.

    Example:
        >>> activation_kind(False, 2)
        'cpu-bf16'
    """
    return "gpu" if gpu else "cpu" if dtype_bytes == 4 else "cpu-bf16"


def activation_bytes(dims: dict[str, int], *, batch_size: int, max_length: int, checkpointing: bool, dtype_bytes: int,
                     gpu: bool, scored: Optional[int] = None) -> tuple[int, int]:
    """(decoder layers, LM head and loss) bytes a training step of ``batch_size`` examples of
    ``max_length`` tokens holds at its peak, for ``dims`` from :func:`model_dims`. ``scored``: the
    positions the LM head projects, those that carry loss (default: every one).

    With gradient checkpointing the layers keep only their inputs, and one layer at a time is
    recomputed in full during the backward pass.

    Example:
        >>> dims = dict(hidden=576, layers=30, heads=9, kv=192, mlp=1536, vocab=49152)
        >>> layers, head = activation_bytes(dims, batch_size=4, max_length=256, checkpointing=False, dtype_bytes=4,
        ...                                 gpu=False)
        >>> round(layers / 2**30, 2), round(head / 2**30, 2)
        (2.68, 1.22)
    """
    tokens = batch_size * max_length
    c = ACTIVATIONS[activation_kind(gpu, dtype_bytes)]
    per_layer = tokens * (c["hidden"] * dims["hidden"] + c["kv"] * dims["kv"] + c["mlp"] * dims["mlp"]) * dtype_bytes
    if checkpointing:
        layers = dims["layers"] * tokens * c["checkpointed"] * dims["hidden"] * dtype_bytes + per_layer
    else:
        layers = dims["layers"] * per_layer
    head = min(tokens if scored is None else scored, HEAD_TILE[0]) * min(dims["vocab"], HEAD_TILE[1]) * c["head_bytes"]
    return layers, int(head)


def free_memory(device: torch.device | str | None = None) -> int:
    """Bytes free for training now: on the model's GPU (CUDA's own count), else what the OS can still give.

    On a CPU that is /proc/meminfo's MemAvailable.

    Example:
        >>> free_memory("cpu") > 0
        True
    """
    import torch

    if torch.cuda.is_available() and (device is None or getattr(device, "type", device) == "cuda"):
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def step_bytes(config: PretrainedConfig) -> dict[str, list[int]]:
    """What a training step without gradient checkpointing holds for a model of ``config``, per device
    and activation dtype size (``"gpu-2"``: a GPU in bf16 or fp16; ``"cpu-4"``: a CPU in fp32): [bytes per
    token of the batch, bytes per token of the LM head's tile, bytes of a whole tile], as
    :func:`activation_bytes` counts them.

    Exported scripts carry this table as a setting: the model's sizes are known at export, and the
    batch size and length, which a user may edit in the script, are applied as it runs
    (:func:`needs_checkpointing`).

    Example:
        >>> from transformers import LlamaConfig
        >>> step_bytes(LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        ...                        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152))["cpu-4"]
        [2810880, 1277952, 5234491392]
    """
    dims, table = model_dims(config), {}
    for device, size in (("cpu", 4), ("cpu", 2), ("gpu", 4), ("gpu", 2)):
        per_token, head = activation_bytes(dims, batch_size=1, max_length=1, checkpointing=False, dtype_bytes=size,
                                           gpu=device == "gpu")
        tile = activation_bytes(dims, batch_size=1, max_length=HEAD_TILE[0], checkpointing=False, dtype_bytes=size,
                                gpu=device == "gpu")[1]
        table[f"{device}-{size}"] = [per_token, head, tile]
    return table


def needs_checkpointing(model: torch.nn.Module, dtype: torch.dtype, step: dict[str, list[int]], *, batch_size: int,
                        max_length: int) -> bool:
    """Whether to turn gradient checkpointing on: only when a step would not fit in 90% of the memory free (it
    says so then). ``step`` (:func:`step_bytes`): per device and size of ``dtype``, the one the model computes
    in, a step's bytes per token of the batch, per token of the LM head's tile, and of a whole tile.

    Without checkpointing a step runs about 1.3–3× faster (benchmarks/results.md), so it is off when it
    is not needed. The step counts the activations of ``batch_size`` examples of ``max_length`` tokens
    and the adapter's fp32 weights, gradients and AdamW state.

    Example:
        >>> import torch
        >>> needs_checkpointing(model, torch.float32, step_bytes(model.config), batch_size=4, max_length=1024)
        False
    """
    import torch

    device = next(model.parameters()).device
    gpu = device.type == "cuda"
    per_token, head, tile = step[f"{'gpu' if gpu else 'cpu'}-{torch.finfo(dtype).bits // 8}"]
    tokens = batch_size * max_length
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) * 16  # fp32 weight, grad, AdamW's two
    need, free = tokens * per_token + min(tokens * head, tile) + trainable, free_memory(device if gpu else "cpu")
    if need > 0.9 * free:
        print(f"gradient checkpointing on: a step without it needs about {need / 2**30:.1f} GiB of activations and "
              f"optimizer state, more than the {free / 2**30:.1f} GiB free", flush=True)
    return need > 0.9 * free


def choose_checkpointing(model: torch.nn.Module, setting: bool | None, *, batch_size: int, max_length: int) -> bool:
    """Gradient checkpointing as the recipe sets it (True/False), or, unset (None), as
    :func:`needs_checkpointing` decides it for the dtype the model computes in (:func:`compute_dtype`).

    Example:
        >>> choose_checkpointing(None, False, batch_size=4, max_length=1024)
        False
    """
    if setting is not None:
        return setting
    return needs_checkpointing(model, compute_dtype(model), step_bytes(model.config), batch_size=batch_size,
                               max_length=max_length)
