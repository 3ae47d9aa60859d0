"""Checks a run's settings against what usually works, before the first step.

Each lint is one printed line naming the setting, what was given, why it is likely a mistake and
what to set instead. They are advice, not errors: training goes on. A message is shown once per
process, so re-running a cell does not repeat it. The thresholds are the ones the study-guide
notebooks measure (``notebooks/learn/``).

Example:
    >>> lints(lora=LoraSection(r=64, alpha=16), lr=2e-4, has_eval=True)
    ['lora.alpha 16 is below lora.r 64: the update is scaled by alpha/r = 0.25, so each step moves the adapter 8x less than at alpha = 2·r; set alpha=128 (or variant=rslora)']
"""  # noqa: E501 - a doctest's expected output, one line

from __future__ import annotations

import warnings
from typing import Any, Optional

from ..core.errors import LoraNbWarning, strict_flags
from ..model.discovery import smallest_dimension
from ..recipe.schema import LoraSection

# LoRA's usual learning rates: 2e-4 is the common start for 1B–70B models (QLoRA used 1e-4–2e-4);
# small models take up to ~2e-3 (the embedded model's demo, SmolLM2-135M on the GPU check).
LR_RANGE = (1e-5, 2e-3)
TRUNCATED_SHARE = 0.5  # max_length cutting more than this share of the examples is worth a line

_shown: set[str] = set()


@strict_flags
def lints(*, lora: LoraSection, lr: float, has_eval: bool, adapted: Optional[dict[str, tuple[int, int]]] = None,
          max_length: Optional[int] = None, cut: int = 0, rows: int = 0, warmup: float = 0,
          steps: int = 0) -> list[str]:
    """The settings' likely mistakes, one sentence each (empty when none).

    ``adapted``: {module name: (in_features, out_features)} of the adapted layers; ``cut`` of
    ``rows`` training examples reach ``max_length`` tokens (they lose their ends); ``warmup`` (steps,
    or a fraction below 1) of a run of ``steps``.

    Example:
        >>> lints(lora=LoraSection(r=16, alpha=32), lr=2e-4, has_eval=True)
        []
        >>> print(lints(lora=LoraSection(), lr=0.05, has_eval=True)[0].split(":")[0])
        train.lr 0.05 is above LoRA's usual range for pretrained models (1e-05–0.002)
    """
    found = []
    if lora.variant != "rslora" and lora.alpha < lora.r:
        scale = lora.alpha / lora.r
        found.append(f"lora.alpha {lora.alpha:g} is below lora.r {lora.r}: the update is scaled by alpha/r = "
                     f"{scale:.3g}, so each step moves the adapter {2 / scale:.3g}x less than at alpha = 2·r; "
                     f"set alpha={2 * lora.r} (or variant=rslora)")
    low, high = LR_RANGE
    if lr > high:
        found.append(f"train.lr {lr:g} is above LoRA's usual range for pretrained models ({low:g}–{high:g}): "
                     "such steps tend to diverge or overwrite what the base model knows; 2e-4 is the usual start "
                     "(small models take up to 2e-3; only a randomly initialised toy model wants more)")
    elif lr < low:
        found.append(f"train.lr {lr:g} is below LoRA's usual range for pretrained models ({low:g}–{high:g}): "
                     "the adapter starts at zero and barely moves in a short run; 2e-4 is the usual start")
    smallest = smallest_dimension(adapted)
    if smallest and lora.r >= smallest[1]:
        name, (d_in, d_out) = smallest[0], adapted[smallest[0]]
        found.append(f"lora.r {lora.r} is not below the smallest adapted dimension ({name}: {d_in}→{d_out}): "
                     f"there the update can be full-rank and costs r·(in+out) = {lora.r * (d_in + d_out)} parameters "
                     f"against {d_in * d_out} for the whole weight; use r < {smallest[1]}")
    if not has_eval:
        found.append("data.eval is not set: without held-out rows the run cannot tell learning from memorising; "
                     "pass eval=0.1 (a tenth of the rows) or an eval file")
    if max_length and rows and cut / rows > TRUNCATED_SHARE:
        found.append(f"train.max_length {max_length} cuts {cut} of {rows} examples ({cut / rows:.0%}): their ends, "
                     "usually the answers, are never learned; raise max_length (lora_nb.preview shows the tokens)")
    if steps and warmup >= 1 and warmup >= steps:
        found.append(f"train.warmup {warmup:g} steps is not shorter than the run ({steps} steps): the learning rate "
                     "never reaches train.lr; give a fraction of the run (0.03 is usual) or fewer steps")
    return found


def adapted_shapes(model: Any) -> dict[str, tuple[int, int]]:
    """{name: (in_features, out_features)} of the layers an adapter wraps (PEFT's LoRA layers).

    Example:
        >>> adapted_shapes(lora_nb.inject(lora_nb.load("my-model")[0], targets="attention", verbose=False))
        {'model.layers.0.self_attn.q_proj': (32, 32), ...}
    """
    from peft.tuners.lora import LoraLayer

    return {name.removeprefix("base_model.model."): (m.in_features, m.out_features) for name, m in model.named_modules()
            if isinstance(m, LoraLayer) and getattr(m, "in_features", None)}


def warn_once(messages: list[str]) -> None:
    """Warn each message as a :class:`~lora_nb.core.errors.LoraNbWarning` unless this process did before.
    During a lora_nb call it shows as a ``note: …`` line on stdout (no stderr box in a notebook);
    ``warnings.filterwarnings("ignore", category=LoraNbWarning)`` silences them.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as said:
        ...     warn_once(["lora.alpha 8 is below lora.r 16: …"])
        ...     warn_once(["lora.alpha 8 is below lora.r 16: …"])
        >>> [str(w.message) for w in said]
        ['lora.alpha 8 is below lora.r 16: …']
    """
    for message in messages:
        if message not in _shown:
            _shown.add(message)
            warnings.warn(message, LoraNbWarning, stacklevel=2)
