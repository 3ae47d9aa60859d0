"""Model FLOPs utilisation (MFU): the FLOPs a LoRA training step needs, and the machine's matmul peak.

MFU = model FLOPs per CPU-second of training ÷ the measured matmul peak per CPU-second. Model FLOPs
count what the step must compute, not what a given implementation does (recomputation under
gradient checkpointing, padding and positions scored without a label do not count):

- each frozen weight of a linear layer (the LM head included): 4 FLOPs per token — forward and the
  gradient of its input (a frozen weight has no gradient of its own);
- each adapter weight: 6 FLOPs per token — forward, input gradient, weight gradient;
- causal attention: 6·L²·d per layer for a sequence of L tokens (d = heads × head size), forward
  ``2·L²·d`` and backward twice that.

The usual 6·N per token (Kaplan et al., PaLM) would credit a LoRA step with weight gradients it never
computes, so it reads 1.5× higher than this.
"""

from __future__ import annotations

import time
from typing import Any


def matmul_peak(dtype: Any = None, n: int = 2048, seconds: float = 2.0) -> float:
    """FLOPs per CPU-second of an ``n``×``n`` matrix product in ``dtype`` (default: the dtype lora_nb
    trains in on this machine, :func:`lora_nb.hf.devices.auto_dtype`), with torch's threads: the best of
    five rounds of about ``seconds`` / 5 each.

    Example:
        >>> matmul_peak(n=256, seconds=0.05) > 1e8   # doctest: +SKIP
        True
    """
    import torch

    from lora_nb.hf.devices import auto_dtype

    dtype = dtype or auto_dtype()
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # first call: allocation, kernel choice
    start = time.process_time()
    a @ b
    reps = max(1, int(seconds / 5 / max(time.process_time() - start, 1e-4)))
    best = 0.0
    for _ in range(5):
        start = time.process_time()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n ** 3 * reps / max(time.process_time() - start, 1e-9))
    return best


def model_shape(model: Any) -> dict:
    """What :func:`step_flops` needs of a (PEFT-wrapped) causal LM: frozen linear weights (LM head
    included, counted once when tied), adapter weights, attention width and layer count.

    Example:
        >>> model_shape(peft_model)   # doctest: +SKIP
        {'frozen': 134515008, 'adapter': 4884480, 'attention_width': 576, 'layers': 30}
    """
    import torch

    frozen = adapter = 0
    seen = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Linear) or weight is None or id(weight) in seen:
            continue
        seen.add(id(weight))
        if "lora_" in name:
            adapter += weight.numel()
        else:  # a frozen base weight; a 4-bit one stores half a byte per weight, count its shape
            frozen += module.in_features * module.out_features
    config = model.config.get_text_config()
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {"frozen": frozen, "adapter": adapter, "attention_width": config.num_attention_heads * head,
            "layers": config.num_hidden_layers}


def step_flops(shape: dict, tokens: int, squared_lengths: int) -> float:
    """Model FLOPs of training on ``tokens`` real tokens whose sequences' squared lengths sum to
    ``squared_lengths`` (see the module's docstring for what is counted).

    Example:
        >>> shape = {"frozen": 100, "adapter": 10, "attention_width": 8, "layers": 2}
        >>> step_flops(shape, tokens=5, squared_lengths=25)   # 4*100*5 + 6*10*5 + 6*25*8*2
        4700.0
    """
    return float(4 * shape["frozen"] * tokens + 6 * shape["adapter"] * tokens
                 + 6 * squared_lengths * shape["attention_width"] * shape["layers"])
