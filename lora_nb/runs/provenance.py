"""Where a model came from: how it was loaded, how its adapter was made, with which seed.

One explicit record per model, kept here (not as attributes stuck onto the model) and read by
whoever needs it: a run's recipe, the adapter's ``lora_nb.json``, the exported script. A model
lora_nb did not load or inject is described from what it carries itself.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Optional

from ..recipe.schema import LoraSection, ModelSection


@dataclass
class Made:
    """How one model was made: loaded as ``model``, adapted as ``lora`` with ``seed``."""

    model: Optional[ModelSection] = None
    lora: Optional[LoraSection] = None
    seed: Optional[int] = None


_RECORDS: "weakref.WeakKeyDictionary[Any, Made]" = weakref.WeakKeyDictionary()


def unwrap(model: Any) -> Any:
    """The base model under a PEFT wrapper (``model`` itself when it has none).

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 2)
        >>> unwrap(layer) is layer
        True
    """
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def record(made_model: Any, **how: Any) -> None:
    """Remember how ``made_model`` (its base, for a PEFT model) was made: ``model=``, ``lora=``, ``seed=``."""
    entry = _RECORDS.setdefault(unwrap(made_model), Made())
    for key, value in how.items():
        setattr(entry, key, value)


def made(model: Any) -> Made:
    """What :func:`record` remembered about ``model`` (empty when lora_nb did not make it)."""
    return _RECORDS.get(unwrap(model), Made())


def model_section(model: Any) -> ModelSection:
    """How ``model`` was loaded: what :func:`lora_nb.load` recorded, else read off the model."""
    recorded = made(model).model
    if recorded is not None:
        return recorded
    quant = ("4bit" if getattr(model, "is_loaded_in_4bit", False)
             else "8bit" if getattr(model, "is_loaded_in_8bit", False) else None)
    return ModelSection(name=str(getattr(model, "name_or_path", "") or "unknown"), quant=quant)


def lora_section(model: Any) -> LoraSection:
    """The lora settings of a PeftModel's adapter: as given to :func:`lora_nb.inject`, else read back
    from its LoraConfig."""
    recorded = made(model).lora
    if recorded is not None:
        return recorded
    cfg = model.peft_config[model.active_adapter]
    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else sorted(cfg.target_modules)
    variant = "dora" if cfg.use_dora else "rslora" if cfg.use_rslora else "lora"
    return LoraSection(r=cfg.r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, targets=targets, variant=variant,
                       bias=cfg.bias, rank_pattern=cfg.rank_pattern or None, alpha_pattern=cfg.alpha_pattern or None,
                       modules_to_save=sorted(cfg.modules_to_save) if cfg.modules_to_save else None)
