"""Target discovery: which modules a model has, what role each plays, and what LoRA would cost.

A module's role comes from where it sits, never from its leaf name alone: GPT-2 has ``c_proj`` in
both attention and MLP, BERT has ``dense`` in the attention output, the FFN output and the pooler.
Inside a repeated block (a path with a layer index), a projection under an attention module is
``attention``; a linear beside an ``experts`` module is the MoE ``router``; any other linear is
``mlp``. Outside the blocks sit ``embedding``, ``head`` (lm_head, classifiers), ``pooler`` and
``other``. MoE experts stored as 3-D parameters are reported as ``experts``.

Given a name, path or config, the model is built on the meta device: only config.json is read and
no weight is allocated or initialised, so a 70B model's table takes well under a second once
transformers has imported the model's code.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..core.errors import ConfigError, check_positive, strict_flags
from ..runs.provenance import unwrap
from ..core.quiet import quietly
from ..core.render import html_table, text_table
from ..hf.devices import quantisation_of

ROLES = ("attention", "mlp", "router", "experts", "embedding", "head", "pooler", "other")
LINEAR_KINDS = ("Linear", "Conv1D", "Linear4bit", "Linear8bitLt")


@dataclass(frozen=True)
class Module:
    """One adaptable place in the model: a linear layer, or a 3-D expert parameter."""

    name: str
    role: str
    kind: str
    in_features: int
    out_features: int
    experts: int = 0  # >0 for a 3-D expert parameter (experts × out × in)

    def lora_params(self, r: int) -> int:
        """LoRA's added parameters at rank ``r``: r·(in+out), per expert for 3-D parameters."""
        return r * (self.in_features + self.out_features) * max(self.experts, 1)

    @property
    def is_linear(self) -> bool:
        return self.kind in LINEAR_KINDS


def smallest_dimension(shapes: Mapping[str, tuple[int, int]]) -> Optional[tuple[str, int]]:
    """(name, dimension) of the layer with the smallest input or output size among ``shapes``
    ({name: (in_features, out_features)}): at a rank at or above it the update there can be full-rank,
    which the lints, :func:`lora_nb.suggest` and the panel check; None for no layers.

    Example:
        >>> smallest_dimension({"q_proj": (64, 64), "down_proj": (256, 32)})
        ('down_proj', 32)
    """
    if not shapes:
        return None
    name, dims = min(shapes.items(), key=lambda item: min(item[1]))
    return name, min(dims)


@dataclass
class Discovery:
    """What :func:`discover` found. ``roles`` maps a role to the full names of its modules.

    Renders as an HTML table in notebooks and as text in terminals.

    Example:
        >>> report = discover("./my-model")
        >>> report.roles["attention"][:2]
        ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.k_proj']
    """

    source: str
    modules: list[Module]
    all_linear: list[str]
    total_params: int
    r: int = 16

    @property
    def roles(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in self.modules:
            out.setdefault(m.role, []).append(m.name)
        return out

    def names(self, role: str) -> list[str]:
        """Full names of the linear modules of ``role`` ("all-linear" gives PEFT's own set)."""
        if role == "all-linear":
            return list(self.all_linear)
        return [m.name for m in self.modules if m.role == role and m.is_linear]

    def lora_params(self, targets: str | list[str] = "all-linear", r: Optional[int] = None) -> int:
        """LoRA parameters for a role (or "all-linear", or a list of roles and module names) at rank ``r``.

        Example:
            >>> discover(model).lora_params("attention", r=8), discover(model).lora_params(["q_proj", "v_proj"], r=8)
            (3584, 1792)
        """
        return sum(m.lora_params(r or self.r) for m in self.picked(targets))

    def picked(self, targets: str | list[str]) -> list[Module]:
        """The modules ``targets`` adapts: a role or "all-linear", or a list of roles and names, each name
        a full module name or its last dotted parts, as PEFT matches ``target_modules`` ("q_proj" is every
        layer's ``self_attn.q_proj``). A name that matches no linear module is refused, as PEFT refuses it.

        Example:
            >>> [m.name for m in discover(model).picked(["layers.0.self_attn.q_proj"])]
            ['model.layers.0.self_attn.q_proj']
        """
        if isinstance(targets, str) and (targets == "all-linear" or targets in self.roles):
            names = set(self.names(targets))
            return [m for m in self.modules if m.name in names]
        names, linear = set(), [m.name for m in self.modules if m.is_linear]
        for t in [targets] if isinstance(targets, str) else targets:
            found = self.names(t) if t in self.roles else [n for n in linear if n == t or n.endswith("." + t)]
            if not found:
                raise ConfigError("targets", t, problem="matches no linear module",
                                  allowed=["all-linear", *self.roles, *sorted({n.rsplit(".", 1)[-1] for n in linear})])
            names.update(found)
        return [m for m in self.modules if m.name in names]

    def summary_rows(self) -> list[list[Any]]:
        rows = []
        for role in ROLES:
            mods = [m for m in self.modules if m.role == role]
            if not mods:
                continue
            n = sum(m.lora_params(self.r) for m in mods if m.is_linear)
            linear = any(m.is_linear for m in mods)
            rows.append([role, len(mods), n if linear else None, _pct(n, self.total_params) if linear else None])
        n = self.lora_params("all-linear")
        rows.append(["all-linear (PEFT)", len(self.all_linear), n, _pct(n, self.total_params)])
        return rows

    def detail_rows(self) -> list[list[Any]]:
        groups: dict[tuple, list[Module]] = defaultdict(list)
        for m in self.modules:
            groups[(m.role, re.sub(r"\.\d+\.", ".*.", m.name), m.kind, m.out_features, m.in_features,
                    m.experts)].append(m)
        rows = []
        for (role, pattern, kind, out_f, in_f, experts), mods in groups.items():
            shape = f"{experts}×{out_f}×{in_f}" if experts else f"{out_f}×{in_f}"
            lora = mods[0].lora_params(self.r) if mods[0].is_linear else None
            rows.append([role, pattern, kind, shape, len(mods), lora])
        return rows

    _SUMMARY = ["role", "modules", "LoRA params", "% of model"]
    _DETAIL = ["role", "module", "kind", "shape (out×in)", "count", "LoRA params each"]

    def _title(self) -> str:
        return f"{self.source}: {self.total_params:,} parameters; LoRA at r={self.r}"

    def __str__(self) -> str:
        return (text_table(self._SUMMARY, self.summary_rows(), self._title()) + "\n\n"
                + text_table(self._DETAIL, self.detail_rows()))

    def _repr_html_(self) -> str:
        return (html_table(self._SUMMARY, self.summary_rows(), self._title())
                + html_table(self._DETAIL, self.detail_rows()))


def _pct(n: int, total: int) -> Optional[str]:
    return f"{100 * n / total:.3f}%" if total else None


@strict_flags
@quietly()
def discover(model: Any, *, r: int = 16, trust_remote_code: bool = False) -> Discovery:
    """Find the modules LoRA can adapt, grouped by role, with shapes and parameter counts at rank ``r``.

    ``model`` is a loaded model (also a quantised or PEFT one), a Hub name, a local folder or a
    ``PretrainedConfig``. For the last three only the config is read and the model is built on
    the meta device. The "all-linear" total equals PEFT's own count for ``target_modules="all-linear"``.

    Example:
        >>> import transformers
        >>> report = discover(transformers.LlamaConfig())   # Llama-2-7B's shape; a Hub name reads its config
        >>> print(report)  # doctest: +ELLIPSIS
        LlamaConfig: 6,738,415,616 parameters; LoRA at r=16
        role               modules  LoRA params  % of model
        -----------------  -------  -----------  ----------
        attention              128   16,777,216  0.249%
        mlp                     96   23,199,744  0.344%
        ...
    """
    check_positive("r", r, problem="the LoRA rank must be a positive whole number (8–64 covers most tasks)")
    source = getattr(model, "name_or_path", None) or type(model).__name__
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not hasattr(model, "named_modules"):
        source = model if isinstance(model, str) else type(model).__name__
        model = meta_model(model, trust_remote_code=trust_remote_code)
    base = unwrap(model)
    return Discovery(source=str(source), modules=_classify(base), all_linear=peft_all_linear(base),
                     total_params=_param_count(base), r=r)


@strict_flags
def meta_model(source: Any, trust_remote_code: bool = False):
    """Build the model for a name, folder or config on the meta device: no weights, no memory, and
    no weight initialisation.

    Why ``torch.device("meta")`` rather than accelerate's ``init_empty_weights``: under the latter
    transformers still runs its weight initialisation over every module (on tensors without data,
    to no effect), which was most of the build's CPU time (Qwen3-235B-A22B: 0.86 s against 0.07 s;
    Llama-3-70B: 0.27 s against 0.13 s). transformers skips it when the device in use is meta, and
    builds ``from_pretrained``'s skeleton the same way. Buffers (rotary frequencies) are on the meta device too.

    Example:
        >>> import transformers
        >>> meta_model(transformers.LlamaConfig()).device
        device(type='meta')
    """
    import torch
    from transformers import AutoModelForCausalLM

    from .loading import model_class, read_config

    config = source if not isinstance(source, str) else read_config(source, trust_remote_code)
    cls = model_class(config)
    with torch.device("meta"):
        if cls is AutoModelForCausalLM:
            model = cls.from_config(config, trust_remote_code=trust_remote_code)
        else:
            model = cls._from_config(config)
    # from_pretrained ties the weights the config says are shared (a tied lm_head is the embedding):
    # do the same, or the shared matrix is counted twice.
    model.tie_weights()
    return model


def task_type(model: Any) -> Optional[str]:
    """PEFT's task type for a model, from its class: CAUSAL_LM, SEQ_CLS, or None."""
    name = type(unwrap(model)).__name__
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return "CAUSAL_LM"
    if name.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    return None


def _kind(module: Any) -> Optional[str]:
    import torch

    name = type(module).__name__
    if name in ("Linear4bit", "Linear8bitLt", "Conv1D"):
        return name
    if hasattr(module, "base_layer"):  # a PEFT-wrapped layer: report what it wraps
        return _kind(module.base_layer)
    if isinstance(module, torch.nn.Linear):
        return "Linear"
    return None


def _features(module: Any, kind: str) -> tuple[int, int]:
    module = getattr(module, "base_layer", module)
    if kind == "Conv1D":
        return module.weight.shape[0], module.nf
    return module.in_features, module.out_features


def _classify(model: Any) -> list[Module]:
    import torch

    named = dict(model.named_modules())
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found = []
    for name, module in named.items():
        if is_peft_internal(name):
            continue
        kind = _kind(module)
        if kind is not None:
            in_f, out_f = _features(module, kind)
            is_output = output is not None and output in (module, getattr(module, "base_layer", None))
            role = "head" if is_output else _role(name, named)
            found.append(Module(name, role, kind, in_f, out_f))
        elif isinstance(module, torch.nn.Embedding):
            found.append(Module(name, "embedding", "Embedding", module.num_embeddings, module.embedding_dim))
        elif _is_router(name, named, module):
            w = module.weight
            found.append(Module(name, "router", type(module).__name__, w.shape[1], w.shape[0]))
        else:
            for pname, p in module.named_parameters(recurse=False):
                if p.dim() == 3:  # experts × out × in, as transformers 5 stores MoE experts
                    found.append(Module(f"{name}.{pname}", "experts", "Experts (3-D)", p.shape[2], p.shape[1],
                                        p.shape[0]))
    return found


def is_peft_internal(name: str) -> bool:
    """Whether module ``name`` is a layer PEFT added (``lora_A``, ``base_layer``, …) rather than the model's own.

    Example:
        >>> is_peft_internal("model.layers.0.self_attn.q_proj.lora_A.default"), is_peft_internal("model.layers.0.mlp")
        (True, False)
    """
    return any(part in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "base_layer", "lora_dropout",
                        "lora_magnitude_vector", "modules_to_save", "original_module") for part in name.split("."))


def _is_router(name: str, named: dict, module: Any) -> bool:
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    w = getattr(module, "weight", None)
    has_experts = f"{parent}.experts" in named if parent else "experts" in named
    return has_experts and not name.endswith(".experts") and w is not None and w.dim() == 2


def _role(name: str, named: dict) -> str:
    parts = name.split(".")
    layer_at = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    if layer_at is None:  # outside the repeated blocks
        if any("pool" in p.lower() for p in parts):
            return "pooler"
        if parts[-1] in ("classifier", "score", "qa_outputs", "lm_head") or "cls" in parts or "classifier" in parts:
            return "head"
        return "other"
    inner = [".".join(parts[: i + 1]) for i in range(layer_at + 1, len(parts) - 1)]
    for path in inner:
        attr, cls = path.rsplit(".", 1)[-1].lower(), type(named[path]).__name__.lower()
        if "attn" in attr or "attention" in attr or "attention" in cls:
            return "attention"
    if _is_router(name, named, named[name]):
        return "router"
    return "mlp"


def peft_all_linear(model: Any) -> list[str]:
    """The modules PEFT targets for ``target_modules="all-linear"``: every Linear/Conv1D except the
    output layer (and the classifier of a sequence-classification model)."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    excluded = {id(output)} if output is not None else set()
    if output is None and task_type(model) == "SEQ_CLS":
        from peft.utils.constants import SEQ_CLS_HEAD_NAMES

        head = next((getattr(model, n) for n in SEQ_CLS_HEAD_NAMES if getattr(model, n, None) is not None), None)
        excluded |= {id(head)} if head is not None else set()
    return [n for n, m in model.named_modules()
            if not is_peft_internal(n) and _kind(m) is not None and id(getattr(m, "base_layer", m)) not in excluded]


def _param_count(model: Any) -> int:
    total = 0
    for p in model.parameters():
        total += p.numel() * (2 if quantisation_of(p) == "4bit" else 1)  # two 4-bit values per byte
    return total
