"""lora_nb: LoRA/QLoRA fine-tuning of Hugging Face models, in notebooks and scripts.

The pipeline, one call per step (heavy libraries load on first use, so importing is instant)::

    import lora_nb
    lora_nb.estimate("Qwen/Qwen2.5-0.5B-Instruct", quant="4bit")  # memory, before loading
    model, tok = lora_nb.load("Qwen/Qwen2.5-0.5B-Instruct", quant="4bit")
    lora_nb.suggest("Qwen/Qwen2.5-0.5B-Instruct", rows=5000, gpu_gb=16)  # a recipe, each choice explained
    lora_nb.discover(model)                              # targets by role, with LoRA costs
    model = lora_nb.inject(model, r=16, targets="attention")
    run = lora_nb.train(model, tok, "data.jsonl", steps=200)
    lora_nb.compare(model, tok, ["Hello?"])              # base vs adapter
    lora_nb.merge(model, "merged", tokenizer=tok)
"""

from __future__ import annotations

import importlib
from typing import Any

from .core import quiet as _quiet  # noqa: F401 - first: from here on the training stack's import-time notes go to the log

from .core.version import __version__  # noqa: E402, F401 - after quiet on purpose; re-exported as lora_nb.__version__

_EXPORTS = {  # public name -> the module that defines it
    "load": "model.loading",
    "discover": "model.discovery",
    "Discovery": "model.discovery",
    "estimate": "model.memory",
    "MemoryEstimate": "model.memory",
    "inject": "model.injection",
    "train": "training.trainer",
    "Run": "runs.record",
    "generate": "inference.generation",
    "compare": "inference.generation",
    "Comparison": "inference.generation",
    "evaluate": "inference.evaluation",
    "Evaluation": "inference.evaluation",
    "save": "runs.adapters",
    "load_adapter": "model.attach",
    "merge": "inference.merging",
    "push": "inference.publish",
    "Recipe": "recipe.schema",
    "suggest": "model.heuristics",
    "run": "experiments.pipeline",
    "resume": "experiments.resume",
    "sweep": "experiments.sweeps.sweep",
    "Sweep": "experiments.sweeps.sweep",
    "to_script": "experiments.pipeline",
    "ConfigError": "core.errors",
    "preview": "data.preview",
    "Panel": "notebook.panel.shell",
    "doctor": "core.doctor",
}

__all__ = sorted(_EXPORTS)


_PACKAGES = ("data",)  # lora_nb.data.check: a package whose public names are its own


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in _PACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'lora_nb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext lora_nb`` registers the ``%lora`` and ``%%lora`` magics (see ``%lora help``)."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext lora_nb`` removes the magics."""
    from .notebook import unload_ipython_extension as unload

    unload(ipython)
