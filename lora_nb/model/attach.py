"""Put a saved adapter on a base model: the base loaded as the adapter was trained (or one already
loaded), PEFT's ``PeftModel.from_pretrained``, and every weight checked to have found its layer.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Optional, Union

from ..core.errors import ConfigError, first_line, strict_flags
from ..core.files import user_path
from ..core.progress import worth_a_bar
from ..core.quiet import quietly
from ..runs.adapters import adapter_meta, check_folder


AS_TRAINED = "as trained"  # load_adapter's quant and dtype: as the adapter's lora_nb.json records


@strict_flags
@quietly(progress=worth_a_bar)
def load_adapter(base: Any, folder: Union[str, Path], *, trainable: bool = False, quant: Optional[str] = AS_TRAINED,
                 dtype: str = AS_TRAINED, key: str = "folder"):
    """Put the adapter saved in ``folder`` on ``base`` and return the ``PeftModel``.

    ``base`` is the base model: a Hub name or folder, loaded for you — quantised and in the dtype the
    adapter was trained with unless ``quant`` / ``dtype`` say otherwise (``quant=None``: full
    precision) — or a model already loaded, alone or as the ``(model, tokenizer)`` pair
    :func:`lora_nb.load` returns. A folder that is missing, incomplete, pickled or made for another
    model is refused with one line naming ``key`` (:func:`check_folder`), before a base is read,
    and a loaded ``base`` is then left exactly as it was.

    Example:
        >>> model = load_adapter("./base-model", "runs/x/adapter")
        >>> load_adapter("./base-model", "runs/x/adapter", quant=None, dtype="fp32").peft_config["default"].r
        4
    """
    from .loading import load

    folder = user_path(folder)
    check_folder(folder, key=key)  # before the base's weights are read
    if isinstance(base, tuple) and len(base) == 2:  # what lora_nb.load returns
        base = base[0]
    if isinstance(base, (str, Path)):
        meta = adapter_meta(folder, key=key)
        base, _ = load(str(base), quant=meta["quant"] if quant == AS_TRAINED else quant,
                       dtype=meta["dtype"] if dtype == AS_TRAINED else dtype)
    return _attach(base, folder, key, trainable)


def _attach(base: Any, folder: Path, key: str, trainable: bool):
    """``base`` wearing the adapter in ``folder``; on any failure ``base`` is put back as it was
    (PEFT puts its layers into the base before it reads the weights)."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors import safe_open

    from ..hf.models import pin_4bit_layout

    config = check_folder(folder, key=key)
    with _untouched_on_failure(base):
        try:
            model = PeftModel.from_pretrained(pin_4bit_layout(base), str(folder), config=config, is_trainable=trainable)
        except (ValueError, TypeError, KeyError, RuntimeError) as e:
            if isinstance(e, torch.OutOfMemoryError):
                raise
            raise _misfit(key, folder, base, first_line(e, prefer="mismatch")) from None
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
            stored = {k for k in f.keys() if ".lora_" in k}
        wanted = {k for k in get_peft_model_state_dict(model) if ".lora_" in k}
        # PEFT loads a file silently without the weights it finds no layer for, and leaves layers
        # without weights at their initial (no-op) values. (A model that renames its checkpoint's
        # keys, _checkpoint_conversion_mapping, has PEFT rename the file's too: not compared here.)
        if stored != wanted and not getattr(base, "_checkpoint_conversion_mapping", None):
            odd = sorted(stored ^ wanted)
            raise _misfit(key, folder, base, f"{len(stored - wanted)} weights in adapter_model.safetensors belong "
                          f"to no layer adapter_config.json adapts, and {len(wanted - stored)} it adapts are missing "
                          f"(e.g. {odd[0]})")
    return model


def _misfit(key: str, folder: Path, base: Any, detail: str) -> ConfigError:
    name = getattr(base, "name_or_path", "") or type(base).__name__
    return ConfigError(key, problem=f"the adapter in {folder} does not fit the base model {name}: {detail}; "
                       "load it on the base it was trained on, or fix adapter_config.json")


@contextlib.contextmanager
def _untouched_on_failure(model: Any):
    """Put every module's attributes (children, parameters, hooks, ``peft_config``) and each
    parameter's ``requires_grad`` back as they were if the block fails."""
    saved = [(m, {k: copy.copy(v) if isinstance(v, dict) else v for k, v in vars(m).items()}) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    except BaseException:
        for module, attributes in saved:
            module.__dict__.clear()
            module.__dict__.update(attributes)
        for parameter, requires_grad in grads:
            parameter.requires_grad_(requires_grad)
        raise
