"""How much memory LoRA/QLoRA training needs, from the model's config alone, before loading it.

The total is the sum of six parts, each from a count, not a guess:

* weights: the linear layers at the quantised width (NF4 with double quantisation: 0.516 bytes a
  parameter; LLM.int8: 1), everything else (embeddings, norms, the LM head) in the load dtype, or
  fp32 for a quantised model, which PEFT's ``prepare_model_for_kbit_training`` upcasts;
* the adapter: LoRA's parameters on the modules ``targets`` picks (:func:`lora_nb.discover`) and their
  gradients, in fp32 (PEFT's default) or bf16 (``adapter_dtype``);
* the optimizer's state, by transformers' ``optim`` name: AdamW's two moments in the adapter dtype
  (torch), in 32 or 8 bits (bitsandbytes), paged or not (:mod:`lora_nb.model.optimizers`);
* the decoder layers' activations, per token (:func:`lora_nb.hf.memory_model.activation_bytes`): all of
  them without gradient checkpointing, each layer's input plus one layer's with it. The tokens are
  ``batch_size`` × the longest batch's padded length: ``max_length``, or with ``data`` the longest
  example as TRL tokenises it (the collator pads a batch to its longest; transformers' length-grouped
  sampler, lora_nb's default, even puts that batch first);
* the LM head and loss: TRL scores it in fp32 tiles of up to 4096 tokens;
* a fixed reserve: 1 GiB on a GPU (the CUDA context and allocator slack), 40 MiB on the CPU (what
  the runtime adds once the libraries are imported).

The activation and head terms were measured on this project's CPU (RSS growth of real training
steps; tests/test_memory.py keeps them within 15%) and checked on CUDA by benchmarks/gpu.sh.
Nothing is allocated: the model is built on the meta device, as :func:`lora_nb.discover` does.
Sizes are in bytes; tables show GiB (2**30) and GB (10**9) side by side, as GPU makers sell in GB.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..core.errors import ConfigError, check_positive, strict_flags
from ..recipe.arguments import known_names
from ..recipe.names import device_kind
from ..recipe.schema import QUANTS, coerce
from .optimizers import check_optimizer, state_bytes

GIB, GB = 2 ** 30, 10 ** 9
# Usable memory of the GPUs people fine-tune on (what the CUDA driver reports, in MiB).
GPUS = {"T4 16 GB": 15_360 * 2 ** 20, "A100 40 GB": 40_960 * 2 ** 20, "A100/H100 80 GB": 81_559 * 2 ** 20}
UNITS = {"gb": GB, "gib": GIB, "mb": 10 ** 6, "mib": 2 ** 20}
# Bytes a parameter takes in a quantised linear layer: 4-bit NF4 with a block of 64 and its
# absmax double-quantised to 8 bits (+ an fp32 scale per 256 blocks); 8-bit with an fp32 scale per row.
QUANT_BYTES = {"4bit": 0.5 + 1 / 64 + 4 / (64 * 256), "8bit": 1.0}
RESERVE = {"gpu": 1 * GIB, "cpu": 40 * 2 ** 20, "cpu-bf16": 80 * 2 ** 20}  # bf16 on a CPU: oneDNN's buffers too
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
PAGED = "the optimizer state paged to CPU memory"


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
    adapter: int  # LoRA weights and their gradients
    layers: dict = field(repr=False)  # gradient checkpointing (False/True) → decoder activations
    head: int = 0
    reserve: int = 0
    gradient_checkpointing: Optional[bool] = None  # None: decided by the memory at hand (train())
    optimizer: int = 0  # the optimizer's state
    paged: int = 0  # of which a paged optimizer lets the driver move to CPU memory when the GPU runs out
    optim: str = "adamw_torch"
    adapter_dtype: str = "fp32"
    length: int = 0  # the longest batch's padded length: max_length, or the data's longest example
    examples: int = 0  # examples in that batch (batch_size, or fewer where the data has fewer)

    def __post_init__(self) -> None:
        self.length, self.examples = self.length or self.max_length, self.examples or self.batch_size

    @strict_flags
    def total(self, gradient_checkpointing: Optional[bool] = None) -> int:
        """Bytes in all, with or without gradient checkpointing (default: as estimated; auto counts as off),
        the optimizer state included even where a paged optimizer could move it to CPU memory."""
        on = self.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
        return self.weights + self.adapter + self.optimizer + self.layers[bool(on)] + self.head + self.reserve

    def fits(self, memory: Union[int, str]) -> str:
        """Whether training fits in ``memory`` (bytes, or a size with its unit: "48 GB" is 48·10⁹ bytes,
        "48 GiB" 48·2³⁰): "yes", "yes, with gradient checkpointing", either with "… the optimizer state
        paged to CPU memory" (a paged optimizer where all but its state fits), or "no". Paging comes
        before checkpointing: it moves only the optimizer state, once a step.

        Example:
            >>> estimate("my-model", batch_size=1, max_length=512, device="gpu").fits("16 GB")
            'yes'
        """
        memory = memory_bytes(memory)
        for on in ((True,) if self.gradient_checkpointing else (False, True)):
            ways = ["gradient checkpointing"] if on else []
            if self.total(on) <= memory:
                return ", with ".join(["yes", *ways])
            if self.paged and self.total(on) - self.paged <= memory:
                return "yes, with " + " and ".join([*ways, PAGED])
        return "no"

    def rows(self) -> list[list[Any]]:
        tokens = f"batch {self.examples} × {self.length} tokens" + (
            f" (the data's longest example; max_length {self.max_length})" if self.length < self.max_length else "")
        optimizer = self.optim + (f", {_gib(self.paged)} GiB of it paged" if self.paged else "")
        parts = [("weights", self.weights, f"{self.params:,} parameters, {self.quant or self.dtype}"),
                 ("LoRA adapter + grads", self.adapter, f"{self.lora_params:,} parameters in {self.adapter_dtype}"),
                 ("optimizer state", self.optimizer, optimizer),
                 ("activations", self.layers[False], tokens),
                 ("activations, checkpointed", self.layers[True], "with gradient checkpointing"),
                 ("LM head + loss", self.head, "fp32 tiles of ≤ 4096 tokens"),
                 ("reserve", self.reserve, "CUDA context, allocator" if self.device == "gpu" else "runtime"),
                 ("total", self.total(False), f"{_gib(self.total(True))} GiB ({_gb(self.total(True))} GB) "
                                              "with gradient checkpointing")]
        return [[name, _gib(n), _gb(n), what] for name, n, what in parts]

    def summary(self) -> str:
        """One line: the total, and whether it fits the usual GPUs (on a GPU estimate)."""
        line = (f"training needs about {_gib(self.total(False))} GiB = {_gb(self.total(False))} GB "
                f"({_gib(self.total(True))} GiB with gradient checkpointing)")
        if self.device == "gpu":
            line += ". Fits " + "; ".join(f"{name}: {self.fits(size)}" for name, size in GPUS.items())
        return line

    def _title(self) -> str:
        return f"{self.source}: training memory on {'a GPU' if self.device == 'gpu' else 'the CPU'}"

    def __str__(self) -> str:
        from ..core.render import text_table

        return text_table(["part", "GiB", "GB", "what"], self.rows(), self._title()) + "\n" + self.summary()

    def _repr_html_(self) -> str:
        import html

        from ..core.render import html_table

        return (html_table(["part", "GiB", "GB", "what"], self.rows(), self._title())
                + f"<p>{html.escape(self.summary())}</p>")


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
    data: Any = None,
    columns: Optional[Union[dict, str]] = None,
    tokenizer: Any = None,
    adapter_dtype: str = "fp32",
    optim: str = "adamw_torch",
    device: Optional[str] = None,
    trust_remote_code: bool = False,
) -> MemoryEstimate:
    """Estimate the memory LoRA (``quant=None``) or QLoRA (``quant="4bit"``) training needs,
    before loading anything: only the config is read (a Hub name, a folder, a config, or a
    model already loaded, whose quantisation is then taken as it is).

    ``data``: the training data (anything :func:`lora_nb.train` takes) or its examples' token counts;
    the activations are then counted at the longest batch's padded length, the longest example
    (rows are tokenised as TRL does, with ``tokenizer``, by default the model's own when ``model``
    names a folder or Hub model), not at ``max_length``; ``columns`` maps the data's own column names
    as ``data.columns`` does in training ("question:instruction,answer:output"). ``adapter_dtype``:
    "fp32" (PEFT's default) or "bf16" (the QLoRA paper's). ``optim``: as transformers names it — "adamw_torch" (and
    "adamw_torch_fused"), "adamw_8bit"/"adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit".
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
    check_optimizer(optim, adapter_dtype)
    device = device_kind(device) or this_device()
    loaded = hasattr(model, "named_modules")
    lengths = None if data is None else _lengths(data, tokenizer or model, max_length, trust_remote_code, columns)
    meta, report = model_and_report(model, r, trust_remote_code)
    if loaded:
        quant = loaded_quant(model) or quant
        dtype = loaded_dtype(model) if dtype == "auto" else dtype
    return count_memory(report, meta, quant=quant, dtype=dtype, r=r, targets=targets, batch_size=batch_size,
                        max_length=max_length, gradient_checkpointing=gradient_checkpointing, device=device,
                        lengths=lengths, adapter_dtype=adapter_dtype, optim=optim)


@strict_flags
def count_memory(report: Any, meta: Any, *, quant: Optional[str], dtype: str, r: int, targets: Union[str, list],
                 batch_size: int, max_length: int, gradient_checkpointing: Optional[bool], device: str,
                 lengths: Optional[list] = None, adapter_dtype: str = "fp32",
                 optim: str = "adamw_torch") -> MemoryEstimate:
    """The estimate's parts, counted from a discovery report and the model (meta or loaded) it describes
    (:func:`estimate` and :func:`lora_nb.suggest` share it); ``lengths``: the examples' token counts.

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
    picked = report.picked(names)
    dtype_name = dtype if dtype != "auto" else ("bf16" if device == "gpu" or cpu_computes_bf16() else "fp32")
    act_bytes = DTYPE_BYTES[dtype_name]
    # quantised linears (not the LM head: transformers keeps it in full precision)
    quantized = sum(m.in_features * m.out_features for m in report.modules
                    if m.is_linear and m.role != "head") if quant else 0
    if quant:  # the rest is upcast to fp32 by prepare_model_for_kbit_training
        weights = quantized * QUANT_BYTES[quant] + (report.total_params - quantized) * 4
    else:
        weights = report.total_params * act_bytes
    rows, length = longest_batch(lengths and [n for n, _ in lengths], batch_size, max_length)
    # TRL's LM head projects only the positions that carry loss (lora_nb.hf.compat.labelled_positions_only on a
    # CPU): with the data known, those of the longest batch (its longest examples), else every position
    scored = sum(sorted(min(k, max_length) for _, k in lengths)[-rows:]) if lengths else None
    dims = model_dims(meta.config)
    layers = {}
    for on in (False, True):
        layers[on], head = activation_bytes(dims, batch_size=rows, max_length=length, checkpointing=on,
                                            dtype_bytes=act_bytes, gpu=device == "gpu", scored=scored)
    tensors = [r * size * max(m.experts, 1) for m in picked for size in (m.in_features, m.out_features)]
    adapter, optimizer, paged = state_bytes(tensors, optim=optim, adapter_dtype=adapter_dtype, gpu=device == "gpu")
    return MemoryEstimate(source=report.source, device=device, quant=quant, dtype=dtype_name, batch_size=batch_size,
                          max_length=max_length, params=report.total_params, lora_params=sum(tensors),
                          weights=int(weights), adapter=adapter, layers=layers, head=head,
                          reserve=RESERVE[activation_kind(device == "gpu", act_bytes)],
                          gradient_checkpointing=gradient_checkpointing, optimizer=optimizer, paged=paged,
                          optim=optim, adapter_dtype=adapter_dtype, length=length, examples=rows)


def longest_batch(lengths: Optional[list], batch_size: int, max_length: int) -> tuple[int, int]:
    """(examples, padded length) of the batch that holds the most tokens: the collator pads a batch to
    its longest example, so that is the batch with the longest example (cut at ``max_length``), with
    either sampler; without lengths, a full batch at ``max_length``.

    Example:
        >>> longest_batch([30, 200, 45, 80], 4, 1024), longest_batch(None, 4, 1024), longest_batch([3000], 4, 1024)
        ((4, 200), (4, 1024), (1, 1024))
    """
    if not lengths:
        return batch_size, max_length
    return min(batch_size, len(lengths)), min(max(lengths), max_length)


def memory_bytes(memory: Union[int, float, str]) -> int:
    """A memory size in bytes: a number of bytes, or a size with its unit ("48 GB" = 48·10⁹ bytes,
    as GPU makers count; "48 GiB" = 48·2³⁰; MB and MiB too).

    Example:
        >>> memory_bytes("24 GB"), memory_bytes("1.5GiB")
        (24000000000, 1610612736)
    """
    if not isinstance(memory, str):
        return int(memory)
    found = re.fullmatch(r"\s*([\d.]+)\s*([a-z]+)\s*", memory.lower())
    if not found or found[2] not in UNITS or found[1].count(".") > 1:
        raise ConfigError("memory", memory, problem="must be bytes or a size with its unit",
                          allowed=["48 GB", "48 GiB", "16000 MiB"])
    return int(float(found[1]) * UNITS[found[2]])


def _lengths(data: Any, tokenizer: Any, max_length: int, trust_remote_code: bool,
             columns: Optional[Union[dict, str]]) -> list[tuple[int, int]]:
    """The token count of each training example and how many carry loss: given as numbers (every
    token then carries loss), or from TRL's tokenisation."""
    if isinstance(data, (list, tuple)) and data and all(isinstance(n, int) and not isinstance(n, bool) for n in data):
        return [(n, n) for n in data]
    from ..data.preview import token_lengths

    if isinstance(tokenizer, (str, os.PathLike)):
        from ..hf.models import load_tokenizer

        tokenizer = load_tokenizer(os.fspath(tokenizer), trust_remote_code=trust_remote_code)
    if not hasattr(tokenizer, "pad_token_id"):
        raise ConfigError("tokenizer", type(tokenizer).__name__, problem="data given as rows needs the model's "
                          "tokenizer to count their tokens: pass tokenizer=, or data as token counts")
    return token_lengths(data, tokenizer, max_length=max_length, columns=columns)


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


def this_device() -> str:
    """"gpu" where CUDA is available, else "cpu": the device an estimate models by default.

    Example:
        >>> this_device() in ("gpu", "cpu")
        True
    """
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def loaded_dtype(model: Any) -> str:
    """The dtype a loaded model computes in, by lora_nb's name ("bf16", "fp32"…).

    Example:
        >>> loaded_dtype(model)
        'fp32'
    """
    from ..hf.devices import compute_dtype, dtype_name

    return dtype_name(compute_dtype(model))


def loaded_quant(model: Any) -> Optional[str]:
    """How a loaded model's weights are quantised: "4bit", "8bit" or None.

    Example:
        >>> loaded_quant(lora_nb.load("my-model", quant="4bit")[0])
        '4bit'
    """
    from ..hf.devices import quantisation_of

    kinds = {quantisation_of(p) for p in model.parameters()}
    return "4bit" if "4bit" in kinds else "8bit" if "8bit" in kinds else None


def _gib(n: float) -> float:
    return round(n / GIB, 2)


def _gb(n: float) -> float:
    return round(n / GB, 2)
