"""Save and reload adapters: PEFT's safetensors files, plus ``lora_nb.json`` recording how the
base was loaded and how the adapter was made (settings as asked, initialisation seed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Union

from ..core.errors import ConfigError, first_line, strict_flags
from ..core.files import check_free, user_path, writing
from .provenance import lora_section, model_section
from ..core.quiet import quietly
from ..recipe.arguments import known_names

META_FILE = "lora_nb.json"


@known_names(renamed={"folder": "output_dir"})
@strict_flags
@quietly()
def save(model: Any, output_dir: Union[str, Path], tokenizer: Any = None, *, overwrite: bool = False) -> Path:
    """Save ``model``'s adapter (safetensors), its tokenizer, and how the base was loaded.

    ``output_dir`` (``folder`` works too) must be new or empty unless ``overwrite=True`` (then the
    adapter's files replace theirs; other files stay). The files are written beside it and moved in
    once all are complete: a full disk, a read-only disk or a Ctrl-C leaves it as it was, with one
    line saying why.

    Example:
        >>> save(lora_nb.load_adapter("base-model", "runs/x/adapter"), "my-adapter", tokenizer=tok)
        PosixPath('my-adapter')
    """
    folder = check_free(output_dir, "output_dir", overwrite=overwrite)
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
        >>> save_from_checkpoint(model, Path("runs/x/.adapter.tmp"),
        ...                      "runs/x/checkpoints/checkpoint-20")  # doctest: +SKIP
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
        >>> adapter_meta("runs/x/adapter")  # doctest: +ELLIPSIS
        {'base': '...', 'quant': None, 'dtype': 'fp32', 'lora': {'r': 4, 'alpha': 32, ...}}
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
        >>> check_folder("runs/x/adapter").r
        4
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
        raise ConfigError(key, problem=f"{config_file} is not a LoRA config PEFT accepts ({first_line(e)}); "
                          "save the adapter again") from None
