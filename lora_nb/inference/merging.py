"""Merge an adapter into a standalone model (saving and reloading adapters: :mod:`lora_nb.runs.adapters`).

Merging a QLoRA adapter: the adapter was trained against the *dequantised* 4-bit weights, not the
original checkpoint. By default :func:`merge` rebuilds the base in 16/32-bit from exactly those
dequantised weights and adds the LoRA update there, so the merged model computes what the adapter
did. ``into="original"`` merges into the original full-precision checkpoint instead (closer to the
released base model, a little further from what was trained). It never merges into quantised
weights, which would round the update away. Cost: one full-precision copy of the model in memory.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Union

from ..model.attach import load_adapter
from ..runs.adapters import adapter_meta
from ..core.errors import ConfigError, strict_flags
from ..core.files import check_free, user_path, writing
from ..core.progress import worth_a_bar
from ..core.quiet import quietly
from ..hf.devices import dtype_name, quantisation_of
from ..recipe.arguments import known_names
from ..recipe.schema import DTYPES

MERGE_INTO = ("dequantized", "original")


@known_names(renamed={"out_dir": "output_dir"})
@strict_flags
@quietly(progress=worth_a_bar)
def merge(
    model: Any,
    output_dir: Union[str, Path],
    *,
    base: Any = None,
    dtype: Optional[str] = None,
    into: str = "dequantized",
    tokenizer: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write a standalone model (weights + tokenizer, no LoRA left) to ``output_dir`` (``out_dir`` works too).

    ``model`` is a PeftModel or an adapter folder (its base is read from the folder, or ``base``:
    a Hub name or folder, or a loaded model, standing for the name or folder it was loaded from;
    merging always reads the base's weights again). ``dtype`` ("bf16", "fp16", "fp32"; default:
    the dtype the adapter computed in). For 4-bit and 8-bit bases, ``into="dequantized"`` (default)
    merges into the dequantised weights the adapter was trained against; ``into="original"``
    reloads the original checkpoint in ``dtype`` and merges there. The result loads with
    ``AutoModelForCausalLM.from_pretrained(output_dir)``.

    ``output_dir`` must be new or empty unless ``overwrite=True`` (then the merge's files replace
    theirs; other files stay); the base model's own folder is refused always. The files are
    written beside ``output_dir`` and moved in once all are complete: a full disk, a read-only disk
    or a Ctrl-C leaves ``output_dir`` as it was (absent, or as before), with one line saying why.

    Example:
        >>> merge(lora_nb.load_adapter("base-model", "runs/x/adapter"), "merged", tokenizer=tok)
        PosixPath('merged')
        >>> merge("runs/x/adapter", "merged-fp32", dtype="fp32")
        PosixPath('merged-fp32')
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    if into not in MERGE_INTO:
        raise ConfigError("into", into, allowed=MERGE_INTO)
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError("dtype", dtype, allowed=DTYPES)
    out_dir = check_free(output_dir, "output_dir", overwrite=overwrite)
    base = _base_name(base)
    if isinstance(model, (str, Path)):
        folder = user_path(model)
        meta = adapter_meta(folder, key="model")
        quant = None if into == "original" else meta["quant"]
        model = load_adapter(base or meta["base"], folder, quant=quant, dtype=meta["dtype"], key="model")
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(folder if (folder / "tokenizer_config.json").exists()
                                                               else base or meta["base"])
    if not isinstance(model, PeftModel):
        raise ConfigError("model", type(model).__name__, problem="is not a PeftModel; give one or an adapter folder")
    _refuse_base_folder(out_dir, base or model.get_base_model().name_or_path)
    target = _torch_dtype(dtype, model)
    if into == "original" and _is_quantized(model):
        from ..model.loading import load

        name = base or model.get_base_model().name_or_path
        full, _ = load(name, dtype=dtype or dtype_name(target))
        standalone = _with_adapter(full, model)
    else:
        standalone = _with_adapter(float_copy(model.get_base_model(), target), model)
    merged = standalone.merge_and_unload()
    with writing(out_dir, "output_dir") as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out_dir


def _base_name(base: Any) -> Optional[str]:
    """``base`` as the name or folder to load it from: a loaded model (or ``(model, tokenizer)``) gives its own."""
    if isinstance(base, (tuple, list)) and base:
        base = base[0]
    if base is None or isinstance(base, (str, Path)):
        return None if base is None else str(base)
    name = getattr(getattr(base, "config", None), "name_or_path", None) or getattr(base, "name_or_path", None)
    if not name:
        raise ConfigError("base", type(base).__name__, problem="is neither a Hub name or folder nor a model loaded "
                          "from one (it has no name_or_path)")
    return str(name)


def _refuse_base_folder(out_dir: Path, base: Any) -> None:
    """Writing the merge over the base model it is read from would destroy the base."""
    if base and Path(str(base)).expanduser().exists() and out_dir.resolve() == Path(str(base)).expanduser().resolve():
        raise ConfigError("output_dir", str(out_dir), problem="is the base model's own folder: the merge would replace "
                          "the base weights; write it to a new folder")


def _is_quantized(model: Any) -> bool:
    return any(quantisation_of(p) for p in model.parameters())


def _torch_dtype(dtype: Optional[str], model: Any):
    """The dtype to merge in: as asked, else the one the adapter computed in."""
    from ..model.loading import device_kwargs, resolve_dtype

    if dtype is not None:
        return resolve_dtype(dtype)
    p = device_kwargs(model)
    return resolve_dtype("bf16" if p["bf16"] else "fp16" if p["fp16"] else "fp32")


def float_copy(base: Any, dtype: Any):
    """A plain (unquantised, un-adapted) copy of ``base`` in ``dtype``: bitsandbytes weights are
    dequantised, PEFT layers left out."""
    import torch
    from peft.utils.integrations import dequantize_bnb_weight

    from ..hf.models import pin_4bit_layout

    pin_4bit_layout(base)  # dequantising a CPU-repacked weight as NF4 would give garbage
    state = {}
    modules = dict(base.named_modules())
    for name, tensor in list(base.named_parameters()) + list(base.named_buffers()):
        if any(part.startswith("lora_") for part in name.split(".")):
            continue
        owner = modules[name.rsplit(".", 1)[0]] if "." in name else base
        if quantisation_of(tensor):
            tensor = dequantize_bnb_weight(tensor, state=getattr(owner, "state", None))
        clean = name.replace(".base_layer.", ".")
        state[clean] = tensor.detach().to(dtype=dtype if tensor.is_floating_point() else tensor.dtype, device="cpu",
                                          copy=True)
    config = copy.deepcopy(base.config)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = dtype
    with torch.device("meta"):
        plain = type(base)(config)
    for name, tensor in state.items():
        module_name, _, leaf = name.rpartition(".")
        module = plain.get_submodule(module_name)
        # Module.__setattr__ swaps a registered parameter or buffer (non-persistent ones included,
        # which load_state_dict would skip) for the real tensor, in place of its meta stand-in.
        is_parameter = isinstance(getattr(module, leaf, None), torch.nn.Parameter)
        setattr(module, leaf, torch.nn.Parameter(tensor, requires_grad=False) if is_parameter else tensor)
    plain.tie_weights()
    missing = [n for n, t in list(plain.named_parameters()) + list(plain.named_buffers()) if t.is_meta]
    if missing:
        raise RuntimeError(f"could not rebuild these weights for the merge: {missing[:5]}")
    return plain.eval()


def _with_adapter(plain: Any, adapted: Any):
    """``plain`` wearing a copy of ``adapted``'s active adapter (same config, same weights)."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    name = adapted.active_adapter
    config = copy.deepcopy(adapted.peft_config[name])
    config.inference_mode = True
    target = get_peft_model(plain, config)
    set_peft_model_state_dict(target, get_peft_model_state_dict(adapted, adapter_name=name))
    return target
