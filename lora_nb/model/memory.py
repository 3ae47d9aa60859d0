"""How much memory LoRA/QLoRA training needs, from the model's config alone, before loading it.

The total is the sum of five parts, each from a count, not a guess:

* weights: the linear layers at the quantised width (NF4 with double quantisation: 0.516 bytes a
  parameter; LLM.int8: 1), everything else (embeddings, norms, the LM head) in the load dtype, or
  fp32 for a quantised model, which PEFT's ``prepare_model_for_kbit_training`` upcasts;
* the adapter: LoRA's parameters in fp32 with their gradients and AdamW's two moments (16 bytes
  each), counted on the modules ``targets`` picks (:func:`lora_nb.discover`);
* the decoder layers' activations, per token (:func:`lora_nb.hf.memory_model.activation_bytes`): all of
  them without gradient checkpointing, each layer's input plus one layer's with it;
* the LM head and loss: TRL scores it in fp32 tiles of up to 4096 tokens;
* a fixed reserve: 1 GiB on a GPU (the CUDA context and allocator slack), 40 MiB on the CPU (what
  the runtime adds once the libraries are imported).

The activation and head terms were measured on this project's CPU (RSS growth of real training
steps; tests/test_memory.py keeps them within 15%) and checked on CUDA by benchmarks/gpu.sh.
Nothing is allocated: the model is built on the meta device, as :func:`lora_nb.discover` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..core.errors import check_positive, strict_flags
from ..recipe.arguments import known_names
from ..recipe.names import device_kind
from ..recipe.schema import QUANTS, coerce

GIB = 2 ** 30
# Usable memory of the GPUs people fine-tune on (what the CUDA driver reports, in MiB).
GPUS = {"T4 16 GB": 15_360 * 2 ** 20, "A100 40 GB": 40_960 * 2 ** 20, "A100/H100 80 GB": 81_559 * 2 ** 20}
# Bytes a parameter takes in a quantised linear layer: 4-bit NF4 with a block of 64 and its
# absmax double-quantised to 8 bits (+ an fp32 scale per 256 blocks); 8-bit with an fp32 scale per row.
QUANT_BYTES = {"4bit": 0.5 + 1 / 64 + 4 / (64 * 256), "8bit": 1.0}
RESERVE = {"gpu": 1 * GIB, "cpu": 40 * 2 ** 20, "cpu-bf16": 80 * 2 ** 20}  # bf16 on a CPU: oneDNN's buffers too
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass
class MemoryEstimate:
    """Training memory for one setting, in bytes, by part. Renders as a table in notebooks and terminals.

    Example:
        >>> import transformers
        >>> m = estimate(transformers.LlamaConfig(), quant="4bit", batch_size=1)   # Llama-2-7B's shape, or its Hub name
        >>> m.fits(GPUS["T4 16 GB"])
        'yes, with gradient checkpointing'
    """

    source: str
    device: str  # "gpu" or "cpu"
    quant: Optional[str]
    dtype: str
    batch_size: int
    max_length: int
    params: int
    lora_params: int
    weights: int
    adapter: int
    layers: dict = field(repr=False)  # gradient checkpointing (False/True) → decoder activations
    head: int = 0
    reserve: int = 0
    gradient_checkpointing: Optional[bool] = None  # None: decided by the memory at hand (train())

    @strict_flags
    def total(self, gradient_checkpointing: Optional[bool] = None) -> int:
        """Bytes in all, with or without gradient checkpointing (default: as estimated; auto counts as off)."""
        on = self.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
        return self.weights + self.adapter + self.layers[bool(on)] + self.head + self.reserve

    def fits(self, memory: int) -> str:
        """Whether training fits in ``memory`` bytes: "yes", "yes, with gradient checkpointing" or "no"."""
        if self.total(False) <= memory and self.gradient_checkpointing is not True:
            return "yes"
        if self.total(True) <= memory:
            return "yes, with gradient checkpointing"
        return "no"

    def rows(self) -> list[list[Any]]:
        return [["weights", _gib(self.weights), f"{self.params:,} parameters, {self.quant or self.dtype}"],
                ["LoRA adapter + grads + AdamW", _gib(self.adapter), f"{self.lora_params:,} parameters × 16 bytes"],
                ["activations", _gib(self.layers[False]), f"batch {self.batch_size} × {self.max_length} tokens"],
                ["activations, checkpointed", _gib(self.layers[True]), "with gradient checkpointing"],
                ["LM head + loss", _gib(self.head), "fp32 tiles of ≤ 4096 tokens"],
                ["reserve", _gib(self.reserve), "CUDA context, allocator" if self.device == "gpu" else "runtime"],
                ["total", _gib(self.total(False)), f"{_gib(self.total(True))} GiB with gradient checkpointing"]]

    def summary(self) -> str:
        """One line: the total, and whether it fits the usual GPUs (on a GPU estimate)."""
        line = (f"training needs about {_gib(self.total(False))} GiB "
                f"({_gib(self.total(True))} GiB with gradient checkpointing)")
        if self.device == "gpu":
            line += ". Fits " + "; ".join(f"{name}: {self.fits(size)}" for name, size in GPUS.items())
        return line

    def _title(self) -> str:
        return f"{self.source}: training memory on {'a GPU' if self.device == 'gpu' else 'the CPU'} (GiB)"

    def __str__(self) -> str:
        from ..core.render import text_table

        return text_table(["part", "GiB", "what"], self.rows(), self._title()) + "\n" + self.summary()

    def _repr_html_(self) -> str:
        import html

        from ..core.render import html_table

        return html_table(["part", "GiB", "what"], self.rows(), self._title()) + f"<p>{html.escape(self.summary())}</p>"


@known_names()
@strict_flags
def estimate(
    model: Any,
    *,
    quant: Optional[str] = None,
    dtype: str = "auto",
    r: int = 16,
    targets: Union[str, list] = "all-linear",
    batch_size: int = 4,
    max_length: int = 1024,
    gradient_checkpointing: Optional[bool] = None,
    device: Optional[str] = None,
    trust_remote_code: bool = False,
) -> MemoryEstimate:
    """Estimate the memory LoRA (``quant=None``) or QLoRA (``quant="4bit"``) training needs,
    before loading anything: only the config is read (a Hub name, a folder, a config, or a
    model already loaded, whose quantisation is then taken as it is).

    ``device``: "gpu" or "cpu", or as torch names it ("cuda", "cuda:0"; default: this machine's); it
    sets the activation dtype ("auto": bf16 on a GPU and on a CPU with bf16 instructions, else fp32,
    as ``resolve_dtype`` picks) and the reserve. The library names of the settings work too
    (``load_in_4bit=True``, ``target_modules``, ``per_device_train_batch_size``, ``max_seq_length``).
    :meth:`MemoryEstimate.fits` says whether a given memory is enough, with or without gradient
    checkpointing.

    Example:
        >>> from transformers import LlamaConfig
        >>> seven_b = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        ...                       num_attention_heads=32, vocab_size=32000)
        >>> m = estimate(seven_b, quant="4bit", batch_size=1, max_length=1024, device="gpu")
        >>> m.fits(GPUS["T4 16 GB"])
        'yes'
    """
    coerce("quant", quant, Optional[str], QUANTS)
    coerce("dtype", dtype, str, ("auto", *DTYPE_BYTES))
    for key, value in (("r", r), ("batch_size", batch_size), ("max_length", max_length)):
        check_positive(key, value)
    device = device_kind(device) or _this_device()
    loaded = hasattr(model, "named_modules")
    meta, report = model_and_report(model, r, trust_remote_code)
    if loaded:
        quant = _loaded_quant(model) or quant
        dtype = _loaded_dtype(model) if dtype == "auto" else dtype
    return count_memory(report, meta, quant=quant, dtype=dtype, r=r, targets=targets, batch_size=batch_size,
                  max_length=max_length, gradient_checkpointing=gradient_checkpointing, device=device)


@strict_flags
def count_memory(report: Any, meta: Any, *, quant: Optional[str], dtype: str, r: int, targets: Union[str, list],
           batch_size: int, max_length: int, gradient_checkpointing: Optional[bool], device: str) -> MemoryEstimate:
    """The estimate's parts, counted from a discovery report and the model (meta or loaded) it describes
    (:func:`estimate` and :func:`lora_nb.suggest` share it).

    Example:
        >>> meta, report = model_and_report("./my-model", 16, False)
        >>> count_memory(report, meta, quant="4bit", dtype="auto", r=16, targets="all-linear",
        ...              batch_size=1, max_length=512, gradient_checkpointing=None, device="gpu")  # doctest: +ELLIPSIS
        MemoryEstimate(source='./my-model', device='gpu', quant='4bit', dtype='bf16', batch_size=1, max_length=512, ...)
    """
    from .injection import resolve_targets
    from ..hf.devices import cpu_computes_bf16
    from ..hf.memory_model import activation_bytes, activation_kind, model_dims

    names = resolve_targets(report, targets, [n for n, _ in meta.named_modules()])
    picked = set(report.all_linear) if names == "all-linear" else {
        m.name for m in report.modules if m.is_linear and any(m.name == t or m.name.endswith("." + t) for t in names)}
    dtype_name = dtype if dtype != "auto" else ("bf16" if device == "gpu" or cpu_computes_bf16() else "fp32")
    act_bytes = DTYPE_BYTES[dtype_name]
    # quantised linears (not the LM head: transformers keeps it in full precision)
    quantized = sum(m.in_features * m.out_features for m in report.modules
                    if m.is_linear and m.role != "head") if quant else 0
    if quant:  # the rest is upcast to fp32 by prepare_model_for_kbit_training
        weights = quantized * QUANT_BYTES[quant] + (report.total_params - quantized) * 4
    else:
        weights = report.total_params * act_bytes
    dims = model_dims(meta.config)
    layers = {}
    for on in (False, True):
        layers[on], head = activation_bytes(dims, batch_size=batch_size, max_length=max_length, checkpointing=on,
                                            dtype_bytes=act_bytes, gpu=device == "gpu")
    lora = report.lora_params(sorted(picked), r)
    return MemoryEstimate(source=report.source, device=device, quant=quant, dtype=dtype_name, batch_size=batch_size,
                          max_length=max_length, params=report.total_params, lora_params=lora, weights=int(weights),
                          adapter=16 * lora, layers=layers, head=head,
                          reserve=RESERVE[activation_kind(device == "gpu", act_bytes)],
                          gradient_checkpointing=gradient_checkpointing)


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
        memory = [count_memory(report, meta, quant=_loaded_quant(model), dtype=_loaded_dtype(model),
                               device=_this_device(), **shape)]
    else:
        memory = [count_memory(report, meta, quant=quant, dtype="auto", device="gpu", **shape)
                  for quant in (None, "4bit")]
    return Targets(report, memory)


@strict_flags
def model_and_report(model: Any, r: int, trust_remote_code: bool) -> tuple:
    """(the model, or its meta-device build for a name/folder/config; its discovery report named as given).

    Example:
        >>> meta, report = model_and_report("./my-model", 16, False)
    """
    from .discovery import discover, meta_model

    meta = model if hasattr(model, "named_modules") else meta_model(
        os.fspath(model) if isinstance(model, os.PathLike) else model, trust_remote_code=trust_remote_code)
    report = discover(meta, r=r)
    if isinstance(model, (str, os.PathLike)):
        report.source = os.fspath(model)
    return meta, report


def _this_device() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _loaded_dtype(model: Any) -> str:
    from ..hf.devices import compute_dtype, dtype_name

    return dtype_name(compute_dtype(model))


def _loaded_quant(model: Any) -> Optional[str]:
    from ..hf.devices import quantisation_of

    kinds = {quantisation_of(p) for p in model.parameters()}
    return "4bit" if "4bit" in kinds else "8bit" if "8bit" in kinds else None


def _gib(n: float) -> float:
    return round(n / GIB, 2)
