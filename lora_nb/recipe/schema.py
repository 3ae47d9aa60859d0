"""The Recipe: one typed, validated description of a whole experiment.

A recipe has five sections — ``model`` (with quantisation), ``lora``, ``data``, ``train`` — plus
``output_dir``. Each setting is defined once, below, with its default and help text; the API's
keyword defaults, the YAML reference, the CLI and the notebook layer all read these definitions.

Example:
    >>> r = Recipe.from_yaml('''
    ... model: {name: ./my-model, quant: 4bit}
    ... lora: {r: 8, targets: attention}
    ... data: {path: train.jsonl}
    ... train: {steps: 100}
    ... ''')
    >>> r.lora.r, r.lora.alpha, r.train.lr
    (8, 32, 0.0002)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..core.errors import ConfigError, check_flag, flag_kind
from ..hf.devices import TORCH_DTYPES

QUANTS = ("8bit", "4bit")  # or null: full precision
DTYPES = ("auto", *TORCH_DTYPES)
VARIANTS = ("lora", "rslora", "dora")
BIASES = ("none", "all", "lora_only")
FORMATS = ("text", "alpaca", "messages", "prompt_completion")  # or null: detected from the columns
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt")


def setting(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A dataclass field carrying its help text and allowed values, the one place a setting is documented."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelSection:
    """What to load and how."""

    name: str = setting("", "Hub model name or local folder (config.json + safetensors weights).")
    quant: Optional[str] = setting(None, "Load quantised with bitsandbytes: 4bit is QLoRA (NF4, double quantisation); 8bit is LLM.int8.", QUANTS)
    dtype: str = setting("auto", "Weights dtype: auto picks bf16 where the hardware computes it natively (GPUs that support it; CPUs with AVX512-BF16 or AMX: ~1.2x faster, half the memory), fp16 on older GPUs, fp32 on other CPUs.", DTYPES)
    device_map: Optional[str] = setting(None, "Passed to from_pretrained (e.g. 'auto'); None keeps the model on one device.")
    trust_remote_code: bool = setting(False, "Run model code from the Hub repository. Off unless you trust it.")

    def __post_init__(self) -> None:
        _check_fields(self, "model")
        if not self.name:
            raise ConfigError("model.name", self.name, problem="a Hub name or local folder is required")


@dataclass
class LoraSection:
    """The adapter: which modules, how big, which LoRA variant."""

    r: int = setting(16, "Rank of the update B·A. Parameters per module are r·(in+out); 8–64 covers most tasks.")
    alpha: float = setting(32, "Scale: the update is multiplied by alpha/r (alpha/sqrt(r) for rslora). 2·r is a common start.")
    dropout: float = setting(0.05, "Dropout on the adapter's input during training.")
    targets: Union[str, list] = setting("all-linear", "Modules to adapt: 'all-linear', a role from discover() ('attention', 'mlp'), a list of module names, or a regex.")
    variant: str = setting("lora", "lora; rslora (scale alpha/sqrt(r), steadier at high rank); dora (magnitude/direction split, slower).", VARIANTS)
    bias: str = setting("none", "Which biases to train alongside the adapter.", BIASES)
    rank_pattern: Optional[dict] = setting(None, "Per-module rank overrides, {regex: r}.")
    alpha_pattern: Optional[dict] = setting(None, "Per-module alpha overrides, {regex: alpha}.")
    modules_to_save: Optional[list] = setting(None, "Modules trained in full and saved with the adapter (e.g. a classifier head).")
    seed: Optional[int] = setting(None, "Seed for the adapter's initialisation; null: train.seed.")

    def __post_init__(self) -> None:
        _check_fields(self, "lora")
        if not _positive_int(self.r):
            raise ConfigError("lora.r", self.r, problem="must be a positive integer")
        if self.alpha <= 0:
            raise ConfigError("lora.alpha", self.alpha, problem="must be positive")
        if not 0 <= self.dropout < 1:
            raise ConfigError("lora.dropout", self.dropout, problem="must be in [0, 1)")
        _check_pattern("lora.rank_pattern", self.rank_pattern, _positive_int, "a positive integer")
        _check_pattern("lora.alpha_pattern", self.alpha_pattern, _positive_number, "a positive number")


@dataclass
class DataSection:
    """Where the examples come from and how to read them."""

    path: str = setting("", "A local json/jsonl/csv/parquet file or folder, or a Hub dataset name.")
    format: Optional[str] = setting(None, "text, alpaca (instruction/input/output), messages (chat), prompt_completion; None detects it from the columns.", FORMATS)
    split: str = setting("train", "Split to train on when the source has several.")
    eval: Union[float, str, None] = setting(None, "Held-out data: a fraction of the training rows (0.1), a file, or a split name.")

    def __post_init__(self) -> None:
        _check_fields(self, "data")
        if isinstance(self.eval, float) and not 0 < self.eval < 1:
            raise ConfigError("data.eval", self.eval, problem="a fraction must be between 0 and 1")


@dataclass
class TrainSection:
    """The SFT loop (TRL's SFTTrainer)."""

    steps: Optional[int] = setting(None, "Optimizer steps; overrides epochs.")
    epochs: Optional[float] = setting(None, "Passes over the data when steps is not set (default 1).")
    lr: float = setting(2e-4, "Peak learning rate. LoRA takes about 10x a full fine-tune's: 1e-4–3e-4.")
    batch_size: int = setting(4, "Examples per device per step.")
    grad_accum: int = setting(1, "Gradient accumulation: the effective batch is batch_size·grad_accum·devices.")
    max_length: int = setting(1024, "Longest tokenised example; longer ones are truncated.")
    packing: bool = setting(False, "Pack several short examples into one sequence (faster on short data).")
    group_by_length: bool = setting(True, "Batch examples of similar length together (within random groups of up to 50 batches, as transformers' length-grouped sampler does): far less padding on mixed-length data, ~1.1x faster here; every epoch still sees every example once. Off: batches in random order (TRL's default).")
    scheduler: str = setting("cosine", "Learning-rate schedule.", SCHEDULERS)
    warmup: float = setting(0.03, "Warm-up: a fraction of the steps (< 1) or a number of steps.")
    eval_steps: Optional[int] = setting(None, "Evaluate every this many steps (default: 10 times a run) when there is eval data.")
    logging_steps: int = setting(1, "Log loss, lr and grad norm every this many steps.")
    seed: int = setting(42, "Seed for the adapter's initialisation, data order and dropout.")
    gradient_checkpointing: Optional[bool] = setting(None, "Recompute activations in the backward pass to save memory, at about 1.3–3× the step time. Default (null): on only when lora_nb.estimate says a step would not fit in the memory free; the run's log.txt says which and why.")
    sft: dict = setting({}, "Any other SFTConfig argument, e.g. {weight_decay: 0.01}.")
    resume: Optional[str] = setting(None, "A run folder to continue from its last checkpoint (adapter, optimizer, scheduler, RNG, step); the run goes on in that folder.")

    def __post_init__(self) -> None:
        _check_fields(self, "train")
        for key in ("batch_size", "grad_accum", "max_length", "logging_steps", "steps", "eval_steps"):
            value = getattr(self, key)
            if value is not None and value < 1:  # only steps and eval_steps may be None
                raise ConfigError(f"train.{key}", value, problem="must be at least 1")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError("train.epochs", self.epochs, problem="must be positive")
        if self.lr <= 0:
            raise ConfigError("train.lr", self.lr, problem="must be positive")
        if self.warmup < 0:
            raise ConfigError("train.warmup", self.warmup, problem="must be 0 or more")


SECTIONS = {"model": ModelSection, "lora": LoraSection, "data": DataSection, "train": TrainSection}


@dataclass
class Recipe:
    """A whole experiment: load → inject → train, from one YAML file or dict. Pure data: run it
    with :func:`lora_nb.run`, export it with :func:`lora_nb.to_script`.

    Example:
        >>> r = Recipe.from_dict({"model": {"name": "gpt2"}, "data": {"path": "d.jsonl"}})
        >>> r.train.steps = 50
        >>> print(r.to_yaml().splitlines()[0])
        model:
    """

    model: ModelSection
    lora: LoraSection = field(default_factory=LoraSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    output_dir: Optional[str] = setting(None, "The run's folder: new or empty (default: a new runs/<date-time>-<label> folder, e.g. runs/20261128-101500-r16-attention-lr2e-4).")

    def __post_init__(self) -> None:
        # why each setting has its value ({"lora.r": "..."}), from lora_nb.suggest; written as YAML comments
        self.reasons: dict[str, str] = {}

    @classmethod
    def from_dict(cls, raw: dict) -> "Recipe":
        """Validate a plain dict (as read from YAML). Unknown keys suggest the nearest valid one.

        Example:
            >>> Recipe.from_dict({"model": {"name": "m"}, "lora": {"rank": 8}})
            Traceback (most recent call last):
            ...
            lora_nb.core.errors.ConfigError: lora.rank: unknown key. Allowed: r, alpha, dropout, targets, variant, bias, rank_pattern, alpha_pattern, modules_to_save, seed. Did you mean 'r'?
        """
        if not isinstance(raw, dict):
            raise ConfigError("recipe", type(raw).__name__, problem="must be a mapping of sections")
        allowed = list(SECTIONS) + ["output_dir"]
        for key in raw:
            if key not in allowed:
                raise ConfigError(str(key), problem="unknown section", allowed=allowed)
        if "model" not in raw:
            raise ConfigError("model", problem="section is required (model: {name: ...})")
        sections = {name: build_section(SECTIONS[name], raw[name] or {}, name) for name in SECTIONS if name in raw}
        out = raw.get("output_dir")
        return cls(**sections, output_dir=None if out is None else str(out))

    @classmethod
    def from_yaml(cls, source: str | Path) -> "Recipe":
        """Read a recipe from YAML text or a ``.yaml`` file. YAML is parsed (safe_load), never executed.

        Example:
            >>> Recipe.from_yaml("model: {name: gpt2}").model.name
            'gpt2'
        """
        if _looks_like_path(source) and not Path(source).is_file():
            raise ConfigError("recipe", str(source), problem="no such file")
        text = Path(source).read_text() if _looks_like_path(source) else str(source)
        return cls.from_dict(parse_yaml(text, "recipe") or {})

    def to_dict(self) -> dict:
        """The recipe as plain values, every setting included.

        Example:
            >>> Recipe.from_dict({"model": {"name": "m"}}).to_dict()["lora"]["r"]
            16
        """
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """YAML text of the recipe; also written to ``path`` when given.

        Example:
            >>> "quant: null" in Recipe.from_dict({"model": {"name": "m"}}).to_yaml()
            True
        """
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if self.reasons:
            text = _commented(text, self.reasons)
        if path is not None:
            Path(path).write_text(text)
        return text

    @staticmethod
    def reference() -> str:
        """Markdown reference of every setting, generated from the field definitions.

        Example:
            >>> "| `lora.r` |" in Recipe.reference()
            True
        """
        rows = ["| key | default | allowed | what it does |", "|---|---|---|---|"]
        places = [(f"{name}.", cls, dataclasses.fields(cls)) for name, cls in SECTIONS.items()]
        places.append(("", Recipe, [f for f in dataclasses.fields(Recipe) if f.name not in SECTIONS]))
        for prefix, cls, fields in places:
            hints = typing.get_type_hints(cls)
            for f in fields:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                null = ["null"] if f.metadata["choices"] and type(None) in typing.get_args(hints[f.name]) else []
                choices = ", ".join(null + [str(c) for c in f.metadata["choices"] or ()])
                rows.append(f"| `{prefix}{f.name}` | `{default!r}` | {choices} | {f.metadata['help']} |")
        return "\n".join(rows)


def _commented(text: str, reasons: dict[str, str]) -> str:
    """YAML ``text`` with each setting's reason as a comment on its line; the text itself when a
    comment would change what the YAML reads as (it never should: checked by reading it back)."""
    import yaml

    lines, section = [], ""
    for line in text.splitlines():
        key = line.split(":", 1)[0]
        if not line.startswith(" "):
            section = key
        dotted = key if not line.startswith(" ") else f"{section}.{key.strip()}" if line.startswith("  ") and line[2] not in " -" else ""
        reason = reasons.get(dotted)
        lines.append(f"{line}  # {' '.join(reason.split())}" if reason else line)
    commented = "\n".join(lines) + "\n"
    return commented if yaml.safe_load(commented) == yaml.safe_load(text) else text


def model_kwargs(section: ModelSection) -> dict:
    """The :func:`lora_nb.load` keywords (besides the name) for a model section."""
    return {k: v for k, v in dataclasses.asdict(section).items() if k != "name"}


def adapter_seed(lora: LoraSection, train: TrainSection) -> int:
    """The seed an adapter is initialised with: ``lora.seed``, else ``train.seed``.

    Example:
        >>> adapter_seed(LoraSection(), TrainSection(seed=7)), adapter_seed(LoraSection(seed=3), TrainSection())
        (7, 3)
    """
    return lora.seed if lora.seed is not None else train.seed


def lora_kwargs(section: LoraSection) -> dict:
    """The :func:`lora_nb.inject` keywords for a lora section."""
    return dataclasses.asdict(section)


def train_kwargs(recipe: Recipe) -> dict:
    """The :func:`lora_nb.train` keywords for a recipe's train and data sections."""
    kwargs = dataclasses.asdict(recipe.train)
    kwargs.update(kwargs.pop("sft"))  # extra SFTConfig arguments travel as train()'s **sft_overrides
    kwargs.update(format=recipe.data.format, split=recipe.data.split, eval=recipe.data.eval, output_dir=recipe.output_dir)
    return kwargs


def parse_yaml(text: str, what: str) -> Any:
    """Plain data from YAML ``text`` (safe_load: never executed); errors name ``what``.

    Anchors and aliases are refused: nested aliases let a few hundred bytes expand into hundreds of
    megabytes once the values are written out (the "billion laughs"), and a recipe has no need for them.

    Example:
        >>> parse_yaml("lora: {r: 8}", "recipe")
        {'lora': {'r': 8}}
        >>> parse_yaml("a: &x [1]\\nb: *x", "recipe")
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: recipe: uses YAML anchors/aliases (&name / *name), which lora_nb does not accept in recipes: write the values out.

    A key given twice in one mapping is refused too (YAML would silently keep the last).
    """
    import yaml

    try:
        # every node event carries .anchor: the &name it defines, or for an alias the *name it repeats
        if any(getattr(event, "anchor", None) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ConfigError(what, problem="uses YAML anchors/aliases (&name / *name), which lora_nb does not accept "
                                            "in recipes: write the values out")
        _refuse_repeated_keys(yaml.compose(text, Loader=yaml.SafeLoader), what)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(what, problem=f"is not valid YAML: {e}") from None


def _refuse_repeated_keys(node: Any, what: str, path: str = "") -> None:
    """Walk a composed YAML tree; a mapping that names a key twice is an error naming the key and both lines."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            where = f"{path}.{name}" if path else name
            if name in seen:
                raise ConfigError(what, problem=f"gives {where} twice (lines {seen[name]} and {key.start_mark.line + 1}), "
                                                "and YAML would keep only the last: keep one")
            seen[name] = key.start_mark.line + 1
            _refuse_repeated_keys(value, what, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_repeated_keys(item, what, f"{path}[{i}]")


def _check_fields(section: Any, prefix: str) -> None:
    """Check that every setting of ``section`` is plain data (see :func:`check_plain`)."""
    for f in dataclasses.fields(section):
        check_plain(f"{prefix}.{f.name}", getattr(section, f.name))
        optional = flag_kind(f.type)
        if optional is not None:  # trust_remote_code="false" is a non-empty string: true to Python
            check_flag(f"{prefix}.{f.name}", getattr(section, f.name), optional=optional)


def check_plain(key: str, value: Any) -> None:
    """Refuse anything but text, finite numbers, booleans, null, lists and text-keyed mappings.

    A recipe is written out as YAML and as Python literals in exported scripts: a date or an
    infinity would not survive either. Errors name the full path (``train.sft.report_date``).

    Example:
        >>> check_plain("train.sft", {"warmup_ratio": float("inf")})
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: train.sft.warmup_ratio: must be a finite number (got inf).
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, value, problem="must be a finite number")
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_plain(f"{key}[{i}]", item)
    elif isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                raise ConfigError(key, name, problem="keys must be text")
            check_plain(f"{key}.{name}", item)
    elif value is not None and not isinstance(value, (str, int, float)):  # bool is an int
        raise ConfigError(key, value, problem="must be text, a number, true/false, null, a list or a mapping "
                                              "(quote dates and other YAML types)")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0  # inf and nan: refused by _check_fields first


def _check_pattern(key: str, pattern: dict | None, valid: Any, what: str) -> None:
    """A {regex: value} override: each key must compile (PEFT matches it against module names)."""
    for regex, value in (pattern or {}).items():
        try:
            re.compile(regex)
        except re.error as e:
            raise ConfigError(key, regex, problem=f"key is not a valid regex ({e})") from None
        if not valid(value):
            raise ConfigError(f"{key}.{regex}", value, problem=f"must be {what}")


def _looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    return "\n" not in source and source.endswith((".yaml", ".yml"))


def build_section(cls: type, raw: Any, prefix: str):
    """Build section ``cls`` from a dict, checking keys, types and choices; errors name ``prefix.key``."""
    if dataclasses.is_dataclass(raw):
        raw = dataclasses.asdict(raw)
    if not isinstance(raw, dict):
        raise ConfigError(prefix, raw, problem="must be a mapping of settings")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}", problem="unknown key", allowed=fields)
        values[key] = coerce(f"{prefix}.{key}", value, hints[key], fields[key].metadata.get("choices"))
    return cls(**values)


def coerce(key: str, value: Any, hint: Any, choices: tuple | None = None) -> Any:
    """Check ``value`` against a type hint, converting the safe cases (``"2e-4"`` → 0.0002, ``8`` → 8.0).

    ``choices`` are the allowed values; an Optional setting also takes null.
    """
    flag = flag_kind(hint)
    if flag is not None:  # one message for every flag, wherever it is given
        check_flag(key, value, optional=flag)
        return value
    optional = type(None) in typing.get_args(hint)
    if choices is not None and value not in choices and not (optional and value is None):
        raise ConfigError(key, value, allowed=(["null"] if optional else []) + list(choices))
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Union:
        if value is None and type(None) in args:
            return None
        for arg in [a for a in args if a is not type(None)]:
            try:
                return coerce(key, value, arg)
            except ConfigError:
                continue
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        raise ConfigError(key, value, problem=f"must be {names}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value)  # YAML 1.1 reads 2e-4 as a string
            except ValueError:
                number = None
            if number is not None:
                check_plain(key, number)  # float() also reads "inf" and "nan"
                return number
    elif hint in (str, list, dict):
        if isinstance(value, hint):
            return value
        if hint is str and isinstance(value, os.PathLike):  # a pathlib.Path for a model or data path
            return os.fspath(value)
    else:
        return value
    raise ConfigError(key, value, problem=f"must be {hint.__name__}")
