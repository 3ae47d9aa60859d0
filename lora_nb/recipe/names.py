"""The names users know from transformers, PEFT, TRL and torch, and the lora_nb setting each one is: one table.

lora_nb names its settings shortly (``lora.alpha``, ``train.lr``, ``model.quant``). :data:`KNOWN` lets the
libraries' own names work too, wherever a setting is given: a recipe (YAML, ``Recipe.from_dict``), ``%lora
key=value`` and ``%%lora`` cells, and the API's keywords (``load``, ``inject``, ``train``, ``estimate``,
``merge``). Each is turned into lora_nb's key, its value converted where the two differ
(``load_in_4bit: true`` is ``quant: 4bit``). The same table gives every "did you mean" its answer, the
help text its "also:" line, and ``train.sft`` its refusal of the settings lora_nb sets itself.

Example:
    >>> to_settings({"lora_alpha": 64, "use_dora": True}, ["r", "alpha", "variant"], sections=("lora",))
    {'alpha': 64, 'variant': 'dora'}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from ..core.errors import ConfigError, check_flag, nearest

SKIP = object()  # a converter's answer for a value that sets nothing (use_dora: false)


@dataclass(frozen=True)
class Known:
    """A name from a library, and the lora_nb setting it is (``section.key``; ``output_dir`` at the top).

    ``convert`` turns the library's value into lora_nb's (called with the name as given, for its errors);
    ``note`` says how, for the help text and the README.
    """

    name: str
    setting: str
    origin: str
    note: str = ""
    convert: Optional[Callable[[str, Any], Any]] = None

    @property
    def section(self) -> str:
        return self.setting.rpartition(".")[0]

    @property
    def key(self) -> str:
        return self.setting.rpartition(".")[2]

    def said(self) -> str:
        """How the help text names it: ``lora_alpha (PEFT)``, with the note when there is one; a row
        that only converts values (``dtype``) is its note."""
        if self.name == self.key:
            return self.note
        return f"{self.name} ({self.origin}{'; ' + self.note if self.note else ''})"


def _when_true(value: str) -> Callable[[str, Any], Any]:
    def convert(key: str, flag: Any) -> Any:
        check_flag(key, flag)
        return value if flag else SKIP
    return convert


TORCH_DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def _dtype(key: str, value: Any) -> Any:
    """torch's dtype names (``"bfloat16"``, ``torch.float16``) as lora_nb's (``bf16``, ``fp16``)."""
    name = str(value).removeprefix("torch.") if type(value).__name__ == "dtype" or isinstance(value, str) else value
    return TORCH_DTYPE_NAMES.get(name, name) if isinstance(name, str) else value


def _steps(key: str, value: Any) -> Any:
    return None if value == -1 and not isinstance(value, bool) else value  # transformers' "not set"


def _ratio(key: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(key, value, problem="must be a fraction of the steps in [0, 1) (warmup takes a number of "
                                              "steps too: give warmup_steps or warmup)")
    return float(value)


T, P, R, B = "transformers", "PEFT", "TRL", "bitsandbytes"
KNOWN: tuple[Known, ...] = (
    Known("model_name_or_path", "model.name", R),
    Known("pretrained_model_name_or_path", "model.name", T),
    Known("load_in_4bit", "model.quant", B, "true is 4bit", _when_true("4bit")),
    Known("load_in_8bit", "model.quant", B, "true is 8bit", _when_true("8bit")),
    Known("torch_dtype", "model.dtype", T, "", _dtype),
    Known("dtype", "model.dtype", "torch", "torch's names bfloat16, float16, float32 are read as bf16, fp16, fp32",
          _dtype),
    Known("lora_alpha", "lora.alpha", P),
    Known("lora_dropout", "lora.dropout", P),
    Known("target_modules", "lora.targets", P),
    Known("use_dora", "lora.variant", P, "true is dora", _when_true("dora")),
    Known("use_rslora", "lora.variant", P, "true is rslora", _when_true("rslora")),
    Known("dataset_name", "data.path", R),
    Known("dataset_train_split", "data.split", R),
    # LLaMA-Factory's flags and Unsloth's train_on_responses_only(): true is one data.train_on value, false sets nothing
    Known("train_on_prompt", "data.train_on", "LLaMA-Factory", "true is all", _when_true("all")),
    Known("mask_history", "data.train_on", "LLaMA-Factory", "true is last_turn", _when_true("last_turn")),
    Known("train_on_responses_only", "data.train_on", "Unsloth", "true is assistant", _when_true("assistant")),
    Known("max_steps", "train.steps", T, "-1 is null", _steps),
    Known("num_train_epochs", "train.epochs", T),
    Known("learning_rate", "train.lr", T),
    Known("per_device_train_batch_size", "train.batch_size", T),
    Known("gradient_accumulation_steps", "train.grad_accum", T),
    Known("max_seq_length", "train.max_length", "older TRL"),
    Known("lr_scheduler_type", "train.scheduler", T),
    Known("warmup_ratio", "train.warmup", "transformers 4", "a fraction below 1", _ratio),
    Known("warmup_steps", "train.warmup", T),
    Known("resume_from_checkpoint", "train.resume", T, "a run folder, not a checkpoint"),
    Known("activation_checkpointing", "train.gradient_checkpointing", "transformers 5"),
    Known("early_stopping_patience", "train.early_stopping", "transformers' EarlyStoppingCallback",
          "a number: the patience"),
    # SFTConfig names lora_nb also uses: listed so train.sft refuses them (lora_nb sets them from the recipe)
    *(Known(key, f"train.{key}", R) for key in ("max_length", "packing", "group_by_length", "logging_steps", "seed",
                                                 "eval_steps", "gradient_checkpointing", "report_to")),
    Known("output_dir", "output_dir", T),
)
BY_NAME: dict[str, list[Known]] = {}
for _row in KNOWN:
    BY_NAME.setdefault(_row.name, []).append(_row)
SECTION_NAMES = ("model", "lora", "data", "train", "")


def aliases(setting: str) -> list[Known]:
    """The rows that name ``setting`` otherwise, or convert its values (``model.dtype``: torch's names).

    Example:
        >>> [k.name for k in aliases("lora.variant")]
        ['use_dora', 'use_rslora']
    """
    return [k for k in KNOWN if k.setting == setting and (k.name != k.key or k.convert)]


def also(setting: str) -> str:
    """The help text's sentence on the other names ``setting`` takes ("" if none).

    Example:
        >>> also("train.lr")
        ' Also: learning_rate (transformers).'
    """
    rows = aliases(setting)
    return f" Also: {'; '.join(k.said() for k in rows)}." if rows else ""


def owner(name: str) -> Optional[Known]:
    """The train setting (or ``output_dir``) that SFTConfig field ``name`` is, where lora_nb sets it.

    Example:
        >>> owner("learning_rate").setting, owner("weight_decay")
        ('train.lr', None)
    """
    return next((k for k in BY_NAME.get(name, ()) if k.section in ("train", "")), None)


def to_settings(given: dict, allowed: Iterable[str], *, sections: Iterable[str] = SECTION_NAMES,
                prefix: str = "", problem: str = "unknown key") -> dict:
    """``given`` with each library name (of ``sections``) as lora_nb's key in ``allowed``, its value
    converted. Unknown keys are refused with the nearest name; a key given twice (as itself and an
    alias, or as two aliases) with different values is refused too. Errors name ``prefix`` + key.

    Example:
        >>> to_settings({"learning_rate": 1e-4, "lr": 2e-4}, ["lr", "steps"], prefix="train.")
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: train.lr: given twice, as learning_rate=0.0001 and lr=0.0002: keep one.
    """
    allowed, sections = list(allowed), tuple(sections)
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}  # key -> how it was given (name=value), for the error
    for name, value in given.items():
        said = f"{name}={value!r}"
        row = next((k for k in BY_NAME.get(name, ()) if k.section in sections and k.key in allowed), None)
        key = row.key if row else name
        if key not in allowed:
            raise unknown(prefix + name, allowed, sections=sections, problem=problem)
        if row and row.convert:
            value = row.convert(prefix + name, value)
            if value is SKIP:
                continue
        if key in out and not _same(out[key], value):
            raise ConfigError(prefix + key, problem=f"given twice, as {given_as[key]} and {said}: keep one")
        out[key], given_as[key] = value, said
    return out


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def unknown(key: str, allowed: Iterable[str], *, sections: Iterable[str] = SECTION_NAMES,
            problem: str = "unknown key") -> ConfigError:
    """The error for ``key`` (dotted as the user sees it), not in ``allowed``: "did you mean" offers the
    lora_nb key of a library name close to it, or the setting elsewhere that it names.

    Example:
        >>> print(unknown("train.max_step", ["steps", "eval_steps"], sections=("train",)))
        train.max_step: unknown key. Allowed: steps, eval_steps. Did you mean 'steps' (max_steps in transformers)?
    """
    allowed, sections = list(allowed), tuple(sections)
    name = key.rsplit(".", 1)[-1]
    here = {a: repr(a) for a in allowed}
    here.update({k.name: f"{k.key!r} ({k.name} in {k.origin})" for k in KNOWN
                 if k.section in sections and k.key in allowed and k.name != k.key})
    elsewhere = {k.name: _elsewhere(k) for k in KNOWN if k.section not in sections}
    elsewhere.update({k.key: _elsewhere(k) for k in KNOWN if k.section not in sections})
    hint = elsewhere.get(name)
    for choices in (here, elsewhere):
        match = hint is None and nearest(name, choices)
        hint = choices[match] if match else hint
    return ConfigError(key, problem=problem, allowed=allowed, hint=hint or "")


def _elsewhere(k: Known) -> str:
    where = f"in the {k.section} section" if k.section else "at the top level"
    return f"{k.setting!r} ({k.name + ' in ' + k.origin + ', ' if k.name != k.key else ''}{where})"


# torch's device names, as lora_nb's estimate names the memory it models (None: not modelled, with why)
DEVICES: dict[str, Optional[str]] = {"gpu": "gpu", "cuda": "gpu", "cuda:N": "gpu", "cpu": "cpu", "mps": None}


def device_kind(device: Any) -> Optional[str]:
    """``"gpu"`` or ``"cpu"`` for a device as torch names it (``"cuda:0"``, ``torch.device("cpu")``); None stays None.

    Example:
        >>> device_kind("cuda:1"), device_kind("cpu")
        ('gpu', 'cpu')
    """
    if device is None:
        return None
    name = str(device) if type(device).__name__ == "device" or isinstance(device, str) else device
    kind = DEVICES.get(re.sub(r"^cuda:\d+$", "cuda:N", name) if isinstance(name, str) else "?", "?")
    if kind == "?":
        raise ConfigError("device", device, allowed=[name for name, kind in DEVICES.items() if kind])
    if kind is None:
        raise ConfigError("device", device, problem="Apple's MPS memory is not modelled (the estimate is measured on "
                                                    "CUDA GPUs and CPUs); device='cpu' with dtype='fp32' comes closest")
    return kind


def table() -> str:
    """Markdown table of the library names lora_nb takes, for the README.

    Example:
        >>> "| `lora_alpha` | `lora.alpha` |" in table()
        True
    """
    rows = ["| name | lora_nb setting | from | value |", "|---|---|---|---|"]
    notes = {k.setting: k.note for k in KNOWN if k.name == k.key and k.convert}  # shared by its aliases (torch_dtype)
    rows += [f"| `{k.name}` | `{k.setting}` | {k.origin} | {k.note or notes.get(k.setting, 'as is')} |" for k in KNOWN
             if k.name != k.key or k.convert]
    return "\n".join(rows)
