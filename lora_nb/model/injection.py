"""Inject a LoRA adapter with PEFT, choosing targets by role, by name or by regex.

Cost: LoRA adds r·(in+out) parameters per adapted module and a little compute per step; DoRA adds
a magnitude vector per module and is noticeably slower to train (it recomputes the weight norm).
"""

from __future__ import annotations

import re
import time
from typing import Any, Optional, Union

from .discovery import Discovery, discover, is_peft_internal, task_type
from ..core.errors import ConfigError, strict_flags
from ..runs.provenance import record, unwrap
from ..core.quiet import quietly
from ..recipe.arguments import known_names
from ..recipe.schema import LoraSection, TrainSection, build_section

_REGEX_CHARS = set("^$*+?[](){}|\\")


def resolve_targets(report: Discovery, targets: Union[str, list], all_names: list[str]) -> Union[str, list[str]]:
    """PEFT's ``target_modules`` for ``targets``: "all-linear" as is (the linear modules by name on
    MoE models), a role as the shortest name suffixes that pick exactly its modules, a list of names
    (or roles) checked, a regex narrowed to the linear modules it matches.

    Example:
        >>> report = discover(model)
        >>> resolve_targets(report, "attention", report.names("all-linear"))[:2]
        ['q_proj', 'k_proj']
    """
    roles = {role: report.names(role) for role in report.roles if report.names(role)}
    linear = report.names("all-linear") + [n for names in roles.values() for n in names if n not in report.all_linear]
    allowed = ["all-linear", *roles, *sorted({n.rsplit(".", 1)[-1] for n in linear})]
    if isinstance(targets, str) and targets.lower() == "all-linear":
        # PEFT's "all-linear" also wraps 3-D MoE experts (ParamWrapper, which refuses dropout):
        # name the linear modules instead so the adapter matches the discovery table.
        return compact(report.all_linear, all_names) if "experts" in report.roles else "all-linear"
    if isinstance(targets, str) and targets in roles:
        return compact(roles[targets], all_names)
    if isinstance(targets, str) and _REGEX_CHARS & set(targets):
        matched = matching("lora.targets", targets, linear)  # linear ones only: PEFT rejects activations etc.
        if not matched:
            raise ConfigError("lora.targets", targets, problem="regex matches no linear module", allowed=allowed)
        return compact(matched, all_names)
    names = [targets] if isinstance(targets, str) else list(targets)
    if not names:
        raise ConfigError("lora.targets", names, problem="is an empty list; name at least one module or role",
                          allowed=allowed)
    picked: list[str] = []
    for t in names:
        if t in roles:
            picked += roles[t]
        elif any(n == t or n.endswith("." + t) for n in linear):
            picked += [n for n in linear if n == t or n.endswith("." + t)]
        else:
            raise ConfigError("lora.targets", t, problem="matches no linear module", allowed=allowed)
    return compact(sorted(set(picked), key=picked.index), all_names)


def compact(names: list[str], all_names: list[str]) -> Union[str, list[str]]:
    """The shortest way to tell PEFT "exactly these modules": dotted suffixes when some depth picks
    them and nothing else (PEFT matches a list entry against a module's full name or ``.suffix``),
    else one regex with the layer index as ``\\d+``, else the full names.

    Example:
        >>> compact(["h.0.attn.c_proj", "h.1.attn.c_proj"], ["h.0.attn.c_proj", "h.0.mlp.c_proj", "h.1.attn.c_proj"])
        ['attn.c_proj']
    """
    chosen = set(names)
    others = [n for n in all_names if n not in chosen]
    for d in range(1, max(n.count(".") for n in names) + 2):
        suffixes = list(dict.fromkeys(".".join(n.split(".")[-d:]) for n in names))
        if not any(o == s or o.endswith("." + s) for o in others for s in suffixes):
            if not any(p.isdigit() for s in suffixes for p in s.split(".")):
                return suffixes
            break
    regex = "|".join(dict.fromkeys(r"\.".join(r"\d+" if p.isdigit() else re.escape(p) for p in n.split("."))
                                   for n in names))
    if {n for n in all_names if re.fullmatch(regex, n)} == chosen:
        return regex
    return list(names)


def lora_config_kwargs(model: Any, **settings: Any) -> dict:
    """The ``peft.LoraConfig`` keywords for lora settings (see :class:`LoraSection`) on ``model``.

    One function for :func:`inject` and the exported script, so both build the same adapter.
    """
    s = build_section(LoraSection, settings, "lora")
    report = discover(model, r=s.r)
    # the names PEFT will see: a PeftModel's own layers (lora_A, base_layer) go when its adapter is removed
    all_names = [n for n, _ in unwrap(model).named_modules() if not is_peft_internal(n)]
    kwargs = dict(
        r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=resolve_targets(report, s.targets, all_names),
        bias=s.bias, use_rslora=s.variant == "rslora", use_dora=s.variant == "dora", task_type=task_type(model),
    )
    for key in ("rank_pattern", "alpha_pattern"):
        if getattr(s, key):
            kwargs[key] = peft_patterns(f"lora.{key}", getattr(s, key), all_names)
    if s.modules_to_save:
        kwargs["modules_to_save"] = s.modules_to_save
    return kwargs


MATCH_SECONDS = 2.0  # for one pattern against all of a model's module names


@strict_flags
def matching(key: str, pattern: str, names: list[str], *, suffix: bool = False) -> list[str]:
    """The ``names`` that regex ``pattern`` matches in full (with ``suffix``: in full or as a dotted
    suffix, PEFT's rule for ``rank_pattern`` keys), refused if that takes over ``MATCH_SECONDS``.

    Nested repeats such as ``(\\w+\\.?)+x`` backtrack exponentially in Python's ``re`` and would
    never return; the ``regex`` package (a transformers dependency) matches with a time limit.

    Example:
        >>> matching("lora.targets", r".*\\.(q|v)_proj", ["l.0.q_proj", "l.0.k_proj", "l.0.v_proj"])
        ['l.0.q_proj', 'l.0.v_proj']
    """
    import regex

    try:
        compiled = regex.compile(rf"(?:.*\.)?(?:{pattern})" if suffix else pattern)
    except regex.error as e:
        raise ConfigError(key, pattern, problem=f"is not a valid regex ({e})") from None
    deadline, matched = time.monotonic() + MATCH_SECONDS, []
    for name in names:
        try:
            if compiled.fullmatch(name, timeout=max(0.0, deadline - time.monotonic())):
                matched.append(name)
        except TimeoutError:
            raise ConfigError(key, pattern, problem=f"takes over {MATCH_SECONDS:g} s to match {len(names)} module "
                              "names (a repeated group that itself repeats, such as (\\w+\\.?)+, backtracks without "
                              "end): write it without nested repeats") from None
    return matched


def peft_patterns(key: str, patterns: dict, all_names: list[str]) -> dict:
    """``rank_pattern``/``alpha_pattern`` as PEFT gets them: a key with no repeat (``q_proj``,
    ``layers\\.0\\.``) as written, any other as the module names it matches, escaped, so PEFT's own
    ``re`` matching cannot backtrack without end. A key that matches no module is refused.

    Example:
        >>> peft_patterns("lora.rank_pattern", {r"l\\.\\d+\\.q_proj": 4}, ["l.0.q_proj", "l.0.v_proj"])
        {'l\\\\.0\\\\.q_proj': 4}
    """
    out = {}
    for pattern, value in patterns.items():
        names = matching(f"{key}.{pattern}", pattern, all_names, suffix=True)
        if not names:
            raise ConfigError(f"{key}.{pattern}", problem="matches no module (PEFT matches the whole name or a "
                              "dotted suffix, such as q_proj or layers.0.self_attn.q_proj)")
        out[pattern if not set("*+?{") & set(pattern) else "|".join(map(re.escape, names))] = value
    return out


@known_names()
@strict_flags
@quietly()
def inject(
    model: Any,
    *,
    r: int = LoraSection.r,
    alpha: float = LoraSection.alpha,
    dropout: float = LoraSection.dropout,
    targets: Union[str, list] = LoraSection.targets,
    rank_pattern: Optional[dict] = LoraSection.rank_pattern,
    alpha_pattern: Optional[dict] = LoraSection.alpha_pattern,
    variant: str = LoraSection.variant,
    bias: str = LoraSection.bias,
    modules_to_save: Optional[list] = LoraSection.modules_to_save,
    seed: Optional[int] = LoraSection.seed,
    verbose: bool = True,
):
    """Wrap ``model`` with a fresh PEFT LoRA adapter and return the ``peft.PeftModel``.

    ``targets``: "all-linear" (PEFT's own rule), a role from :func:`discover` ("attention", "mlp"),
    a list of module names or roles, or a regex matched against full module names. ``variant``:
    "lora", "rslora" or "dora". ``seed`` fixes the adapter's initialisation (None: the default
    ``train.seed``, 42); it is recorded with the adapter, so a run's recipe and exported script
    initialise the same adapter. A model
    that already carries an adapter has it removed first, so rerunning a notebook cell starts
    fresh; a call that fails (a bad setting or target) leaves that adapter in place. Prints one
    line: the adapter's parameters and their share of the base model, as :func:`discover` counts.
    PEFT's names work too: ``lora_alpha``, ``lora_dropout``, ``target_modules``, ``use_dora=True``,
    ``use_rslora=True`` (:mod:`lora_nb.recipe.names`).

    Example:
        >>> peft_model = inject(lora_nb.load("my-model", dtype="fp32")[0], r=8, alpha=16, targets="attention")
        LoRA adapter: 3,584 trainable parameters, 7.656% of the model's 46,816 (attention, r=8)
    """
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from ..hf.models import pin_4bit_layout
    from ..runs.busy import check_not_training

    check_not_training(model, "changing its adapter")
    pin_4bit_layout(model)  # see there: an earlier inference may have repacked the 4-bit weights
    # Every setting is checked, and the targets resolved, before the old adapter is removed: a
    # failed call leaves the model as it was.
    kwargs = lora_config_kwargs(model, r=r, alpha=alpha, dropout=dropout, targets=targets, rank_pattern=rank_pattern,
                                alpha_pattern=alpha_pattern, variant=variant, bias=bias,
                                modules_to_save=modules_to_save)
    config = LoraConfig(**kwargs)
    if isinstance(model, PeftModel):
        if verbose:
            print("Replacing the adapter already on this model.")
        model = model.unload()
    seed = TrainSection.seed if seed is None else seed  # a recipe's default: lora.seed null -> train.seed
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    # Remembered as asked ("attention", not PEFT's resolved set) for the run's recipe, export and lora_nb.json.
    record(peft_model, seed=seed, lora=LoraSection(r=r, alpha=alpha, dropout=dropout, targets=targets, variant=variant,
                                                   bias=bias, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
                                                   modules_to_save=modules_to_save, seed=seed))
    if verbose:
        print(trainable_line(peft_model, targets, r))
    return peft_model


def trainable_line(peft_model: Any, targets: Union[str, list], r: int) -> str:
    """What an adapter trains, as a share of the base model: the figure :func:`lora_nb.discover`'s
    table gives (PEFT's own summary divides by base + adapter instead, a second, smaller figure).

    Example:
        >>> trainable_line(inject(lora_nb.load("my-model")[0], r=4, verbose=False), "attention", 4)
        "LoRA adapter: 4,096 trainable parameters, 8.749% of the model's 46,816 (attention, r=4)"
    """
    trainable, total = peft_model.get_nb_trainable_parameters()
    base = total - trainable
    return (f"LoRA adapter: {trainable:,} trainable parameters, {100 * trainable / base:.3f}% of the model's "
            f"{base:,} ({targets if isinstance(targets, str) else ', '.join(map(str, targets))}, r={r})")
