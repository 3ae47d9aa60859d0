"""The ``trl.SFTConfig`` a train section becomes, and the checks on extra SFTConfig settings.

One function (:func:`sft_config_kwargs`) for :func:`lora_nb.train` and the exported script, so both
train the same way. Extra settings (``train.sft``, ``train(**overrides)``) are checked before
anything runs: their names, their types against SFTConfig's fields, and that none switches off the
checkpoints a crash needs.
"""

from __future__ import annotations

import math
from typing import Any

from ..hf.compat import RENAMED_TRAINING_FIELDS, sft_config_fields
from ..core.errors import ConfigError, nearest, strict_flags
from ..recipe.names import KNOWN, owner
from ..recipe.schema import TrainSection
from .stopping import stopping_config


@strict_flags
def sft_config_kwargs(t: TrainSection, output_dir: str, has_eval: bool, rows: int) -> dict:
    """``trl.SFTConfig`` keywords for a train section: one function for :func:`train` and the exported script.

    A checkpoint (adapter, optimizer, scheduler, RNG, step: what resuming needs) is saved every
    10% of the steps (``train()`` spaces these out in time: :class:`lora_nb.training.callbacks.Recorder`);
    two are kept, so a kill in the middle of a save still leaves a complete one. Mixed precision is
    left to the run's dtype (``bf16``/``fp16`` are added there, and an explicit ``sft`` value wins).
    """
    total = total_steps(t, rows)
    kwargs = dict(
        output_dir=output_dir,
        max_steps=t.steps or -1,
        num_train_epochs=t.epochs or 1,
        learning_rate=t.lr,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        packing=t.packing,
        # packed sequences carry no padding to save
        train_sampling_strategy="group_by_length" if t.group_by_length and not t.packing else "random",
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup,
        logging_steps=t.logging_steps,
        seed=t.seed,
        save_strategy="steps",
        save_steps=max(1, total // 10),
        save_total_limit=2,
        report_to=t.report_to or "none",
    )
    if t.gradient_checkpointing is not None:  # transformers 5 renamed gradient_checkpointing to this
        kwargs["activation_checkpointing"] = t.gradient_checkpointing
    if has_eval:
        kwargs.update(eval_strategy="steps", eval_steps=t.eval_steps or max(1, total // 10))
    kwargs.update(stopping_config(t, kwargs.get("eval_steps")))  # train.early_stopping: saves on the evals
    kwargs.update(t.sft)
    return kwargs


def paced_saves(sft: dict) -> bool:
    """Whether lora_nb sets the run's checkpoint cadence (so it may space saves out in time): yes unless the
    extra settings ``sft`` choose ``save_steps`` or ``save_strategy`` themselves.

    Example:
        >>> paced_saves({}), paced_saves({"save_steps": 1})
        (True, False)
    """
    return not {"save_steps", "save_strategy"} & set(sft)


def total_steps(t: TrainSection, rows: int) -> int:
    """The optimizer steps a train section makes on ``rows`` examples: ``steps``, else its epochs' worth.

    Example:
        >>> total_steps(TrainSection(steps=None, epochs=2, batch_size=4, grad_accum=2), rows=100)
        26
    """
    return t.steps or math.ceil(max(1, math.ceil(rows / (t.batch_size * t.grad_accum))) * (t.epochs or 1))


# Keys users bring from older transformers / TRL versions, and what replaced them.
# (SFTConfig keys that lora_nb sets from a train setting are refused as lora_nb.recipe.names.owner says:
# given in ``sft`` they would silently disagree with the recipe.)
RENAMED = {"evaluation_strategy": "eval_strategy", "dataset_text_field": "a 'text' column (data.format: text)"}


def check_sft_overrides(sft: dict) -> dict:
    """Check extra ``SFTConfig`` settings (``train(**overrides)``, the recipe's ``train.sft``)
    before anything runs: unknown keys get the nearest valid one, renamed keys their new name,
    keys lora_nb sets the setting to use instead (:func:`lora_nb.recipe.names.owner`: one table).

    Example:
        >>> check_sft_overrides({"learning_rate": 1e-3})
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: train.sft.learning_rate: is set by lora_nb from 'lr'; set lr= instead.
    """
    fields = sorted(sft_config_fields() | set(RENAMED_TRAINING_FIELDS))  # the newest names work on any release
    for key in sft:
        setting = owner(key)
        if setting is not None:
            raise ConfigError(f"train.sft.{key}",
                              problem=f"is set by lora_nb from {setting.key!r}; set {setting.key}= instead")
        if key in RENAMED:
            raise ConfigError(f"train.sft.{key}", problem=f"was renamed: use {RENAMED[key]} (transformers 5 / TRL 1)")
        if key not in fields:
            close = owner(nearest(key, [*fields, *(k.name for k in KNOWN)]) or "")  # max_step: train.steps
            hint = f"{close.setting!r} ({close.name} in {close.origin}; set {close.key}=)" if close else None
            raise ConfigError(f"train.sft.{key}", problem="is not an SFTConfig setting", allowed=fields, hint=hint)
    types = sft_field_types()
    for key, value in sft.items():
        if key in types and not _fits(value, types[key]):
            raise ConfigError(f"train.sft.{key}", value, problem=f"must be {_type_name(types[key])}")
    _check_saving(sft)
    if sft.get("padding_free"):
        raise ConfigError("train.sft.padding_free", True, problem="needs max_length=None in TRL (nothing truncated) "
                          "and pays off only with FlashAttention's variable-length kernels: with SDPA it measured half "
                          "the speed on an H200 (benchmarks/results/gpu-h200-2026-11-28.md). Set packing=true instead: "
                          "TRL's packing is padding-free and keeps max_length")
    return sft


def _check_saving(sft: dict) -> None:
    """A checkpoint interval that is no interval at all (zero or negative steps) is refused."""
    steps = sft.get("save_steps")
    if isinstance(steps, (int, float)) and not isinstance(steps, bool) and steps <= 0:
        raise ConfigError("train.sft.save_steps", steps, problem="must be a positive number of steps (or a fraction "
                          "of the run below 1); leave it out for lora_nb's cadence (at least every 10% of the run)")


def saving_notes(sft: dict) -> list[str]:
    """What extra settings take from a run's crash safety — a complete checkpoint (adapter, optimizer,
    scheduler, RNG) at least every 10% of the steps, two kept — one note each, said before training.

    Example:
        >>> saving_notes({"save_strategy": "no"})[0].split(":")[0]
        "train.sft.save_strategy 'no' switches off checkpoints by steps"
    """
    notes = []
    strategy = sft.get("save_strategy", "steps")
    strategy = str(getattr(strategy, "value", strategy))
    if strategy != "steps":
        notes.append(f"train.sft.save_strategy {strategy!r} switches off checkpoints by steps: a crash or kill before "
                     "the end loses " + ("the whole run (nothing to resume)" if strategy == "no" else
                                         "everything since the last " + ("epoch" if strategy == "epoch" else
                                                                         "best eval")))
    limit = sft.get("save_total_limit", 2)
    if isinstance(limit, int) and not isinstance(limit, bool) and limit < 2:
        notes.append(f"train.sft.save_total_limit {limit} keeps fewer than 2 checkpoints: a kill in the middle "
                     "of a save can leave none complete to resume from")
    if sft.get("save_only_model"):
        notes.append("train.sft.save_only_model leaves the optimizer, scheduler and RNG out of the checkpoints: a "
                     "resumed run will not continue with the same losses")
    return notes


def sft_field_types() -> dict[str, Any]:
    """The installed ``SFTConfig``'s field types, by name.

    Example:
        >>> sft_field_types()["weight_decay"]
        <class 'float'>
    """
    import dataclasses

    from trl import SFTConfig

    return {f.name: f.type for f in dataclasses.fields(SFTConfig) if f.init}


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has type ``hint`` (a field's annotation); True where the annotation is not understood."""
    import enum
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    hint = origin or hint
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {m.value for m in hint}
    if isinstance(hint, type) and hint.__module__ == "builtins":
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_name(arg) for arg in typing.get_args(hint)))
    if hint is type(None):
        return "null"
    hint = typing.get_origin(hint) or hint
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text", list: "a list",
            dict: "a mapping"}.get(hint, getattr(hint, "__name__", str(hint)))
