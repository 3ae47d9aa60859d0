"""What LoRA's trainable state takes: the adapter's weights and gradients in the adapter dtype, and the
optimizer's state, named as transformers' ``TrainingArguments(optim=...)`` (and TRL's ``SFTConfig``) name it.

* The adapter dtype: fp32 by default — PEFT's ``get_peft_model(..., autocast_adapter_dtype=True)`` casts
  bf16/fp16 adapter weights to fp32 "as this is typically required for stable training" (PEFT's
  ``get_peft_model`` docstring), which is what ``lora_nb.inject`` does; bf16 where the training code casts
  the LoRA layers back, as the QLoRA paper's code does (artidoro/qlora, qlora.py: ``if args.bf16:
  module = module.to(torch.bfloat16)`` for every ``LoraLayer``). Gradients take the weights' dtype.
* torch's AdamW (``adamw_torch``, ``adamw_torch_fused``: transformers' default) keeps its two moments
  in the parameter's dtype: 8 bytes a parameter for fp32 adapters, 4 for bf16.
* bitsandbytes' AdamW keeps 32-bit moments whatever the parameter's dtype (``paged_adamw_32bit``,
  the QLoRA paper's ``--optim``); the 8-bit ones (``adamw_8bit``, ``adamw_bnb_8bit``, ``paged_adamw_8bit``)
  one byte per moment plus an fp32 absmax per block of 256, except in tensors under 4,096 elements
  (``min_8bit_size``), which stay 32-bit (bitsandbytes/optim/optimizer.py, ``Optimizer2State.init_state``).
* Paged (``paged_*``): on a GPU, bitsandbytes puts each state tensor of 100,000 elements or more in CUDA
  unified memory (``get_state_buffer``), which the driver moves to CPU RAM when the GPU runs out
  ("paged optimizers ... transfer memory from the GPU to the CPU when GPU memory is exhausted",
  bitsandbytes' optimizer docs). Counted here as optimizer state like any other, and also as
  ``paged``: the bytes that can leave the GPU, so training fits where everything else does
  (:meth:`lora_nb.model.memory.MemoryEstimate.fits`). On a CPU nothing is paged.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ConfigError, strict_flags

ADAPTER_DTYPES = {"fp32": 4, "bf16": 2, "fp16": 2}
MIN_8BIT_SIZE = 4096  # bitsandbytes' default: smaller tensors keep 32-bit state
MIN_PAGED_SIZE = 100_000  # bitsandbytes pages state tensors from this many elements
BLOCK = 256  # elements per fp32 absmax of an 8-bit state


@dataclass(frozen=True)
class Optimizer:
    """How an optimizer keeps its state: ``moments`` per parameter, each in the parameter's dtype
    (``bits=None``, torch) or in ``bits`` (bitsandbytes); ``paged`` in CUDA unified memory."""

    moments: int
    bits: int | None = None
    paged: bool = False


# transformers' names (OptimizerNames) for the AdamW variants people fine-tune LoRA with
OPTIMIZERS = {
    "adamw_torch": Optimizer(2), "adamw_torch_fused": Optimizer(2),
    "adamw_8bit": Optimizer(2, 8), "adamw_bnb_8bit": Optimizer(2, 8),
    "paged_adamw_8bit": Optimizer(2, 8, paged=True), "paged_adamw_32bit": Optimizer(2, 32, paged=True),
}


@strict_flags
def state_bytes(tensors: list[int], *, optim: str, adapter_dtype: str, gpu: bool) -> tuple[int, int, int]:
    """(adapter weights and gradients, optimizer state, the part of that state paged to CPU memory
    when the GPU runs out) in bytes, for LoRA tensors of ``tensors`` elements each.

    Example:
        >>> state_bytes([64 * 8192, 8192 * 64], optim="paged_adamw_32bit", adapter_dtype="bf16", gpu=True)
        (4194304, 8388608, 8388608)
    """
    check_optimizer(optim, adapter_dtype)
    kind, width = OPTIMIZERS[optim], ADAPTER_DTYPES[adapter_dtype]
    adapter = optimizer = paged = 0
    for n in tensors:
        adapter += 2 * n * width
        if kind.bits is None:
            per = kind.moments * n * width
        elif kind.bits == 8 and n >= MIN_8BIT_SIZE:
            per = kind.moments * (n + 4 * -(-n // BLOCK))
        else:
            per = kind.moments * n * 4
        optimizer += per
        if kind.paged and gpu and n >= MIN_PAGED_SIZE:
            paged += kind.moments * n * (1 if kind.bits == 8 and n >= MIN_8BIT_SIZE else 4)  # absmax stays on the GPU
    return adapter, optimizer, paged


def check_optimizer(optim: str, adapter_dtype: str) -> None:
    """Refuse an optimizer or adapter dtype the estimate does not model, naming the ones it does.

    Example:
        >>> check_optimizer("adamw_bnb_8bit", "bf16")
    """
    if optim not in OPTIMIZERS:
        raise ConfigError("optim", optim, problem="not modelled", allowed=OPTIMIZERS)
    if adapter_dtype not in ADAPTER_DTYPES:
        raise ConfigError("adapter_dtype", adapter_dtype, allowed=ADAPTER_DTYPES)
