"""Save and reload adapters: PEFT's safetensors files, plus ``lora_nb.json`` recording how the
base was loaded and how the adapter was made (settings as asked, initialisation seed).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from .errors import ConfigError, strict_flags
from .files import check_free, user_path, writing
from .provenance import lora_section, model_section
from .progress import worth_a_bar
from .quiet import quietly

META_FILE = "lora_nb.json"


@strict_flags
@quietly()
def save(model: Any, folder: Union[str, Path], tokenizer: Any = None, *, overwrite: bool = False) -> Path:
    """Save ``model``'s adapter (safetensors), its tokenizer, and how the base was loaded.

    ``folder`` must be new or empty unless ``overwrite=True`` (then the adapter's files replace
    theirs; other files stay). The files are written beside it and moved in once all are complete:
    a full disk, a read-only disk or a Ctrl-C leaves ``folder`` as it was, with one line saying why.

    Example:
        >>> save(model, "my-adapter", tokenizer=tok)   # doctest: +SKIP
    """
    folder = check_free(folder, "folder", overwrite=overwrite)
    if not hasattr(model, "peft_config"):
        raise ConfigError("model", type(model).__name__, problem="has no adapter to save; call lora_nb.inject first")
    with writing(folder, "folder") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _write_meta(model, tmp)
    return folder


# PEFT's files for the default adapter, as save_pretrained writes them (the trainer's checkpoints too).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")


def save_from_checkpoint(model: Any, folder: Path, checkpoint: Union[str, Path], tokenizer: Any = None) -> bool:
    """Fill the new ``folder`` as :func:`save` would, taking the adapter files the trainer has just
    written into ``checkpoint`` (hard links, copies where the file system has none) rather than
    serialising the weights a second time: during training this is most of a save's cost. Returns
    False, having written nothing, when the checkpoint lacks them (then call :func:`save`).

    Example:
        >>> save_from_checkpoint(model, Path("runs/x/.adapter.tmp"), "runs/x/checkpoints/checkpoint-20")   # doctest: +SKIP
        True
    """
    import shutil

    checkpoint = Path(checkpoint)
    present = [name for name in ADAPTER_FILES if (checkpoint / name).is_file()]
    if not {"adapter_config.json", "adapter_model.safetensors"} <= set(present):
        return False
    folder.mkdir(parents=True)
    for name in present:  # the trainer writes each checkpoint's files new and never rewrites them
        try:
            os.link(checkpoint / name, folder / name)
        except OSError:
            shutil.copyfile(checkpoint / name, folder / name)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    _write_meta(model, folder)
    return True


def _write_meta(model: Any, folder: Path) -> None:
    section = model_section(model)
    meta = {"base": section.name, "quant": section.quant, "dtype": section.dtype,
            "lora": dataclasses.asdict(lora_section(model))}  # as asked, with the init seed
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))


def adapter_meta(folder: Union[str, Path], *, key: str = "folder") -> dict:
    """How the adapter's base was loaded: ``{"base", "quant", "dtype"}`` (from lora_nb.json, else
    PEFT's config), once :func:`check_folder` has found the folder complete. ``key``: the argument
    the folder came in, for the error.

    Example:
        >>> adapter_meta("runs/x/adapter")   # doctest: +SKIP
        {'base': 'Qwen/Qwen2.5-0.5B', 'quant': '4bit', 'dtype': 'bf16', 'lora': {...}}
    """
    folder = user_path(folder)
    config = check_folder(folder, key=key)
    meta = {}
    if (folder / META_FILE).exists():
        try:
            meta = json.loads((folder / META_FILE).read_text())
        except ValueError as e:
            raise ConfigError(key, problem=f"{folder / META_FILE} is not JSON ({e}); delete it to fall back on "
                              "adapter_config.json, or save the adapter again") from None
    meta["base"] = meta.get("base") or config.base_model_name_or_path
    meta.setdefault("quant", None)
    meta.setdefault("dtype", "auto")
    return meta


def check_folder(folder: Union[str, Path], *, key: str = "folder"):
    """The adapter's ``LoraConfig``, once ``folder`` is found to hold a whole LoRA adapter:
    adapter_config.json readable as one, and complete safetensors weights. Nothing is unpickled:
    a folder with only ``adapter_model.bin`` is refused. Each fault is one ConfigError naming ``key``.

    Example:
        >>> check_folder("runs/x/adapter").r   # doctest: +SKIP
        8
    """
    from peft import LoraConfig
    from safetensors import safe_open

    folder = user_path(folder)
    config_file, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    fault = None
    if not folder.exists():
        fault = f"{folder} does not exist; give the folder lora_nb.save wrote"
    elif not folder.is_dir():
        fault = f"{folder} is a file, not an adapter folder; give the folder lora_nb.save wrote"
    elif not config_file.is_file():
        fault = f"{folder} holds no adapter_config.json, so it is no adapter folder; give the folder lora_nb.save wrote"
    elif not weights.is_file():
        pickles = sorted(p.name for p in folder.glob("adapter_model.*") if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
        fault = (f"{folder} holds {' and '.join(pickles)}, a pickle, and no adapter_model.safetensors: lora_nb loads "
                 "safetensors only (loading a pickle can run any code); re-save it with PEFT's "
                 "save_pretrained(..., safe_serialization=True) where you trust its source" if pickles else
                 f"{folder} holds no adapter_model.safetensors; save the adapter again")
    if fault:
        raise ConfigError(key, problem=fault)
    try:
        with safe_open(str(weights), "pt") as f:
            f.keys()
    except Exception as e:  # safetensors' own error type: a torn or foreign file
        raise ConfigError(key, problem=f"{weights} is not a whole safetensors file ({e}); the save was cut "
                          "short or the file is damaged: save the adapter again") from None
    try:
        raw = json.loads(config_file.read_text())
    except ValueError as e:
        raise ConfigError(key, problem=f"{config_file} is not JSON ({e}); save the adapter again") from None
    peft_type = raw.get("peft_type") if isinstance(raw, dict) else None
    if peft_type != "LORA":
        raise ConfigError(key, problem=f"{config_file} has peft_type {peft_type!r}, not 'LORA': lora_nb loads LoRA "
                          "adapters (PEFT's PeftModel.from_pretrained loads the others)")
    try:
        return LoraConfig.from_pretrained(str(folder))
    except (TypeError, ValueError) as e:
        raise ConfigError(key, problem=f"{config_file} is not a LoRA config PEFT accepts ({_first_line(e)}); "
                          "save the adapter again") from None


@strict_flags
@quietly(progress=worth_a_bar)
def load_adapter(base: Any, folder: Union[str, Path], *, trainable: bool = False):
    """Put the adapter saved in ``folder`` on ``base`` and return the ``PeftModel``.

    ``base`` is a loaded model, or a name/folder loaded (quantised as at training time) for you.
    A folder that is missing, incomplete, pickled or made for another model is refused with one
    line (:func:`check_folder`), and a loaded ``base`` is then left exactly as it was.

    Example:
        >>> model = load_adapter("./base-model", "runs/x/adapter")   # doctest: +SKIP
    """
    from .loading import load

    folder = user_path(folder)
    if isinstance(base, (str, Path)):
        meta = adapter_meta(folder)
        base, _ = load(str(base), quant=meta["quant"], dtype=meta["dtype"])
    return _attach(base, folder, "folder", trainable)


def load_adapter_from(base: str, folder: Path, quant: Optional[str], dtype: str, *, key: str = "folder"):
    """Load ``base`` (``quant``, ``dtype``) and put the adapter in ``folder`` on it, for inference.

    Example:
        >>> load_adapter_from("./base-model", Path("runs/x/adapter"), "4bit", "bf16")   # doctest: +SKIP
    """
    from .loading import load

    check_folder(folder, key=key)  # before the base's weights are read
    model, _ = load(base, quant=quant, dtype=dtype)
    return _attach(model, folder, key, False)


def _attach(base: Any, folder: Path, key: str, trainable: bool):
    """``base`` wearing the adapter in ``folder``; on any failure ``base`` is put back as it was
    (PEFT puts its layers into the base before it reads the weights)."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors import safe_open

    from .portable import pin_4bit_layout

    config = check_folder(folder, key=key)
    with _untouched_on_failure(base):
        try:
            model = PeftModel.from_pretrained(pin_4bit_layout(base), str(folder), config=config, is_trainable=trainable)
        except (ValueError, TypeError, KeyError, RuntimeError) as e:
            if isinstance(e, torch.OutOfMemoryError):
                raise
            raise _misfit(key, folder, base, _first_line(e, prefer="mismatch")) from None
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


def _first_line(error: BaseException, prefer: str = "") -> str:
    """The line of a library's (often multi-line) message that says what is wrong."""
    lines = [line.strip().rstrip(".") for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if prefer and prefer in line), lines[0] if lines else type(error).__name__)
