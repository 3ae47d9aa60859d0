"""Save and reload adapters: PEFT's safetensors files, plus ``lora_nb.json`` recording how the
base was loaded and how the adapter was made (settings as asked, initialisation seed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from .errors import ConfigError
from .files import check_free, user_path
from .provenance import lora_section, model_section
from .progress import worth_a_bar
from .quiet import quietly

META_FILE = "lora_nb.json"


@quietly()
def save(model: Any, folder: Union[str, Path], tokenizer: Any = None, *, overwrite: bool = False) -> Path:
    """Save ``model``'s adapter (safetensors), its tokenizer, and how the base was loaded.

    ``folder`` must be new or empty unless ``overwrite=True``.

    Example:
        >>> save(model, "my-adapter", tokenizer=tok)   # doctest: +SKIP
    """
    folder = check_free(folder, "folder", overwrite=overwrite)
    if not hasattr(model, "peft_config"):
        raise ConfigError("model", type(model).__name__, problem="has no adapter to save; call lora_nb.inject first")
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    _write_meta(model, folder)
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


def adapter_meta(folder: Union[str, Path]) -> dict:
    """How the adapter's base was loaded: ``{"base", "quant", "dtype"}`` (from lora_nb.json, else PEFT's config)."""
    folder = user_path(folder)
    if not (folder / "adapter_config.json").exists():
        raise ConfigError("adapter_dir", str(folder), problem="holds no adapter_config.json")
    meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).exists() else {}
    if not meta.get("base"):
        meta["base"] = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    meta.setdefault("quant", None)
    meta.setdefault("dtype", "auto")
    return meta


@quietly(progress=worth_a_bar)
def load_adapter(base: Any, folder: Union[str, Path], *, trainable: bool = False):
    """Put the adapter saved in ``folder`` on ``base`` and return the ``PeftModel``.

    ``base`` is a loaded model, or a name/folder loaded (quantised as at training time) for you.

    Example:
        >>> model = load_adapter("./base-model", "runs/x/adapter")   # doctest: +SKIP
    """
    from peft import PeftModel

    from .loading import load
    from .portable import pin_4bit_layout

    folder = user_path(folder)
    if isinstance(base, (str, Path)):
        meta = adapter_meta(folder)
        base, _ = load(str(base), quant=meta["quant"], dtype=meta["dtype"])
    return PeftModel.from_pretrained(pin_4bit_layout(base), str(folder), is_trainable=trainable)


def load_adapter_from(base: str, folder: Path, quant: Optional[str], dtype: str):
    from peft import PeftModel

    from .loading import load

    model, _ = load(base, quant=quant, dtype=dtype)
    return PeftModel.from_pretrained(model, str(folder))
