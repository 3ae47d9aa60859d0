"""Settings as a few file-name-safe characters: a run's label (``r16-attention-lr2e-4``), and the
numbers in it and in a sweep's point names (``lr1e-4``, ``dropout0.05``)."""

from __future__ import annotations

import re
from typing import Optional, Union

from ..recipe.schema import LoraSection


def short_number(value: Union[int, float]) -> str:
    """A number as few characters as reads well: small floats in scientific form, the rest as they are.

    Example:
        >>> short_number(2e-4), short_number(1.5e-4), short_number(0.05), short_number(16)
        ('2e-4', '1.5e-4', '0.05', '16')
    """
    if isinstance(value, float) and value and abs(value) < 1e-2:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{value:g}"


def run_label(lora: LoraSection, lr: float, quant: Optional[str] = None) -> str:
    """A run's settings in a few characters, for folder names and tables: rank, targets, variant
    (when not plain LoRA), learning rate and quantisation.

    Example:
        >>> run_label(LoraSection(r=16, targets="attention"), 2e-4)
        'r16-attention-lr2e-4'
        >>> run_label(LoraSection(r=8, variant="dora"), 1.5e-4, "4bit")
        'r8-all-linear-dora-lr1.5e-4-q4'
    """
    targets = lora.targets if isinstance(lora.targets, str) else "+".join(map(str, lora.targets))
    parts = [f"r{lora.r}", re.sub(r"[^A-Za-z0-9_+-]+", "_", targets).strip("_")[:32] or "custom"]
    if lora.variant != "lora":
        parts.append(lora.variant)
    parts.append("lr" + short_number(lr))
    if quant:
        parts.append("q" + quant.removesuffix("bit"))
    return "-".join(parts)
