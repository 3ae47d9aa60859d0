"""The dtype and device a run computes in: what ``auto`` resolves to, the CPU's bf16 instructions, the
SFTConfig settings that follow them, and the device map of a process.

Shared with exported scripts (:mod:`lora_nb.export.script`): standard library and the HF stack only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# The dtype names of a recipe, as torch names them ("auto" is resolved by resolve_dtype).
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def dtype_name(dtype: torch.dtype) -> str:
    """The recipe's name of a torch dtype (``TORCH_DTYPES`` read backwards).

    Example:
        >>> import torch
        >>> dtype_name(torch.bfloat16)
        'bf16'
    """
    return {torch_name: name for name, torch_name in TORCH_DTYPES.items()}[str(dtype).removeprefix("torch.")]


# bitsandbytes' quantised parameter types, by class name: no need to import bitsandbytes to tell them.
QUANTISED_PARAMS = {"Params4bit": "4bit", "Int8Params": "8bit"}


def quantisation_of(tensor: Any) -> str | None:
    """"4bit" or "8bit" for a bitsandbytes quantised parameter, None for any other tensor.

    Example:
        >>> import torch
        >>> quantisation_of(torch.nn.Parameter(torch.zeros(2))) is None
        True
    """
    return QUANTISED_PARAMS.get(type(tensor).__name__)


def resolve_dtype(name: str) -> torch.dtype:
    """torch dtype for "auto" (:func:`auto_dtype`), "bf16", "fp16" or "fp32".

    Example:
        >>> resolve_dtype("bf16")
        torch.bfloat16
    """
    import torch

    return auto_dtype() if name == "auto" else getattr(torch, TORCH_DTYPES[name])


def auto_dtype() -> torch.dtype:
    """bf16 where the hardware computes in it natively, else fp16 on a GPU, fp32 on a CPU.

    Natively: GPUs that support bf16, and CPUs with AVX512-BF16 or AMX (:func:`cpu_bf16_features`),
    where it trains about 1.2x faster than fp32 at half the memory; other CPUs would only emulate it.

    Example:
        >>> import torch
        >>> auto_dtype() in (torch.bfloat16, torch.float16, torch.float32)
        True
    """
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16_features() else torch.float32


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), which torch's CPU kernels use.

    There bf16 is faster than fp32; elsewhere it is emulated and slower.

    Example:
        >>> cpu_computes_bf16() in (True, False)
        True
    """
    return bool(cpu_bf16_features())


def cpu_bf16_features() -> list[str]:
    """The bf16 matrix instruction sets this CPU has, by name ("AVX512-BF16", "AMX"), from torch's own probes.

    Example:
        >>> set(cpu_bf16_features()) <= {"AVX512-BF16", "AMX"}
        True
    """
    import torch

    probes = (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
    return [name for name, probe in probes if getattr(torch.cpu, probe, lambda: False)()]


def compute_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype ``model`` computes in: a 4-bit model's compute dtype, else its config's dtype.

    Example:
        >>> compute_dtype(model)
        torch.float32
    """
    import torch

    config = getattr(model, "config", None)
    bnb = getattr(config, "quantization_config", None)
    compute = getattr(bnb, "bnb_4bit_compute_dtype", None) if bnb is not None else None
    if isinstance(compute, torch.dtype):
        return compute
    dtype = getattr(config, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def trainer_device_kwargs(dtype: torch.dtype) -> dict[str, bool]:
    """SFTConfig settings that follow the compute ``dtype`` and the machine: mixed precision as the dtype
    (TRL would turn bf16 on), use_cpu for bf16 without a GPU (transformers refuses it otherwise), pinned
    memory (on a CPU it only warns) and Liger's kernels (``pip install lora-nb[liger]``) only on a GPU.

    Example:
        >>> import torch
        >>> trainer_device_kwargs(torch.float32)["bf16"]
        False
    """
    import importlib.util

    import torch

    gpu = torch.cuda.is_available()
    kwargs = dict(bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, dataloader_pin_memory=gpu)
    if kwargs["bf16"] and not gpu:
        kwargs["use_cpu"] = True
    if gpu and importlib.util.find_spec("liger_kernel") is not None:
        kwargs["use_liger_kernel"] = True  # H200: same speed, 1.2 GiB less (LoRA); 7% faster (QLoRA)
    return kwargs


def process_device_map(device_map: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """``device_map`` as given; when None, this process's GPU if there is one (each process of ``accelerate
    launch`` takes its own), else the CPU (None); under FSDP / ZeRO-3 the launcher places the weights (None).

    Example:
        >>> process_device_map("auto")
        'auto'
    """
    import torch

    if device_map is None and torch.cuda.is_available() and not shards_weights():
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return device_map


def shards_weights() -> bool:
    """Whether accelerate launch started this process to shard the model's weights: FSDP or DeepSpeed ZeRO-3.

    Example:
        >>> shards_weights() in (True, False)
        True
    """
    import os

    on = {name: os.environ.get(f"ACCELERATE_USE_{name}", "false").lower() == "true" for name in ("FSDP", "DEEPSPEED")}
    return on["FSDP"] or (on["DEEPSPEED"] and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3")
