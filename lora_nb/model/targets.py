"""What ``%lora targets`` and ``lora-nb targets`` show: :func:`lora_nb.discover`'s table with the
training memory at lora_nb's default settings (:func:`lora_nb.model.memory.count_memory`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import strict_flags
from .memory import MemoryEstimate, count_memory, loaded_dtype, loaded_quant, model_and_report, this_device


@dataclass
class Targets:
    """What ``%lora targets`` and ``lora-nb targets`` show: the discovery table, then a line per
    memory estimate (LoRA and QLoRA on a GPU for a model not loaded yet; the loaded model as it
    is, on this machine). ``discovery`` is the :class:`lora_nb.model.discovery.Discovery`.

    Example:
        >>> print(targets_with_memory("my-model"))  # doctest: +ELLIPSIS
        my-model: 46,816 parameters; LoRA at r=16
        ...
        Training memory (lora_nb.estimate):
        LoRA (bf16), r=16 all-linear, batch 4 × 1024 tokens: training needs about 1.02 GiB ...
        QLoRA (4-bit), r=16 all-linear, batch 4 × 1024 tokens: training needs about 1.02 GiB ...
    """

    discovery: Any
    memory: list

    def __getattr__(self, name: str) -> Any:
        """Everything else is the Discovery's (``roles``, ``names()``, ``lora_params()``, ``source``…)."""
        if name == "discovery":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.discovery, name)

    def _lines(self) -> list[str]:
        def kind(m: MemoryEstimate) -> str:
            return ("QLoRA (4-bit)" if m.quant == "4bit" else "LoRA (8-bit)" if m.quant == "8bit"
                    else f"LoRA ({m.dtype})")

        return [f"{kind(m)}, r={self.discovery.r} all-linear, batch {m.batch_size} × {m.max_length} tokens: "
                f"{m.summary()}"
                for m in self.memory]

    def __str__(self) -> str:
        return str(self.discovery) + "\n\nTraining memory (lora_nb.estimate):\n" + "\n".join(self._lines())

    def _repr_html_(self) -> str:
        import html

        items = "".join(f"<li>{html.escape(line)}</li>" for line in self._lines())
        return self.discovery._repr_html_() + f"<p><b>Training memory</b> (lora_nb.estimate):</p><ul>{items}</ul>"


@strict_flags
def targets_with_memory(model: Any, *, r: int = 16, trust_remote_code: bool = False) -> Targets:
    """:func:`lora_nb.discover`'s table for ``model`` with the training memory at the default
    settings (r, all-linear, batch 4 × 1024): for a name, folder or config, LoRA (bf16) and QLoRA
    (4-bit) on a GPU with whether they fit a T4, an A100 and an 80 GB card; for a loaded model,
    as it was loaded, on this machine.

    Example:
        >>> print(targets_with_memory("my-model", r=16))  # doctest: +ELLIPSIS
        my-model: 46,816 parameters; LoRA at r=16
        role               modules  LoRA params  % of model
        -----------------  -------  -----------  ----------
        attention                8        7,168  15.311%
        ...
    """
    from ..recipe.schema import TrainSection

    loaded = hasattr(model, "named_modules")
    meta, report = model_and_report(model, r, trust_remote_code)
    shape = dict(r=r, targets="all-linear", batch_size=TrainSection.batch_size, max_length=TrainSection.max_length,
                 gradient_checkpointing=None)
    if loaded:
        memory = [count_memory(report, meta, quant=loaded_quant(model), dtype=loaded_dtype(model),
                               device=this_device(), **shape)]
    else:
        memory = [count_memory(report, meta, quant=quant, dtype="auto", device="gpu", **shape)
                  for quant in (None, "4bit")]
    return Targets(report, memory)
