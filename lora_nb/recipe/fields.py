"""The settings of a recipe, section by section: each defined once, with its default, help text and
allowed values (:func:`setting`). The API's keyword defaults, the YAML reference, the CLI, the notebook's
help and the panel all read these definitions; the help text also lists the library names a setting
takes (:mod:`lora_nb.recipe.names`).

Example:
    >>> LoraSection(r=8).alpha
    32
"""

from __future__ import annotations

import dataclasses
import re
import types
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..core.errors import ConfigError, check_flag, check_positive, flag_kind, is_positive
from ..hf.devices import TORCH_DTYPES
from ..hf.trackers import TRACKER_PACKAGES, trackers
from .names import also
from .stopping import early_stopping_setting
from .values import check_plain

QUANTS = ("8bit", "4bit")  # or null: full precision
DTYPES = ("auto", *TORCH_DTYPES)
VARIANTS = ("lora", "rslora", "dora")
BIASES = ("none", "all", "lora_only")
FORMATS = ("text", "alpaca", "messages", "prompt_completion")  # or null: detected from the columns
TRACKERS = tuple(TRACKER_PACKAGES)  # or null / "none": no tracker
TRAIN_ON = ("last_turn", "assistant", "all")  # or null: assistant where the chat template marks it, else last_turn
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial",
              "inverse_sqrt")


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
    quant: Optional[str] = setting(
        None, "Load quantised with bitsandbytes: 4bit is QLoRA (NF4, double quantisation); 8bit is LLM.int8.", QUANTS)
    dtype: str = setting(
        "auto", "Weights dtype: auto picks bf16 where the hardware computes it natively (GPUs that support it; CPUs "
        "with AVX512-BF16 or AMX: ~1.2x faster, half the memory), fp16 on older GPUs, fp32 on other CPUs.", DTYPES)
    device_map: Optional[str] = setting(
        None, "Passed to from_pretrained (e.g. 'auto'); None keeps the model on one device.")
    trust_remote_code: bool = setting(False, "Run model code from the Hub repository. Off unless you trust it.")

    def __post_init__(self) -> None:
        _check_fields(self, "model")
        if not self.name:
            raise ConfigError("model.name", self.name, problem="a Hub name or local folder is required")


@dataclass
class LoraSection:
    """The adapter: which modules, how big, which LoRA variant."""

    r: int = setting(16, "Rank of the update B·A. Parameters per module are r·(in+out); 8–64 covers most tasks.")
    alpha: float = setting(
        32, "Scale: the update is multiplied by alpha/r (alpha/sqrt(r) for rslora). 2·r is a common start.")
    dropout: float = setting(0.05, "Dropout on the adapter's input during training.")
    targets: Union[str, list] = setting(
        "all-linear", "Modules to adapt: 'all-linear', a role from discover() ('attention', 'mlp'), a list of module "
        "names, or a regex.")
    variant: str = setting(
        "lora", "lora; rslora (scale alpha/sqrt(r), steadier at high rank); dora (magnitude/direction split, "
        "slower).", VARIANTS)
    bias: str = setting("none", "Which biases to train alongside the adapter.", BIASES)
    rank_pattern: Optional[dict] = setting(None, "Per-module rank overrides, {regex: r}.")
    alpha_pattern: Optional[dict] = setting(None, "Per-module alpha overrides, {regex: alpha}.")
    modules_to_save: Optional[list] = setting(
        None, "Modules trained in full and saved with the adapter (e.g. a classifier head).")
    seed: Optional[int] = setting(None, "Seed for the adapter's initialisation; null: train.seed.")

    def __post_init__(self) -> None:
        _check_fields(self, "lora")
        check_positive("lora.r", self.r)
        check_positive("lora.alpha", self.alpha, whole=False)
        if not 0 <= self.dropout < 1:
            raise ConfigError("lora.dropout", self.dropout, problem="must be in [0, 1)")
        _check_pattern("lora.rank_pattern", self.rank_pattern, is_positive, "a positive whole number")
        _check_pattern("lora.alpha_pattern", self.alpha_pattern, lambda v: is_positive(v, whole=False),
                       "a positive number")


@dataclass
class DataSection:
    """Where the examples come from and how to read them."""

    path: str = setting("", "A local json/jsonl/csv/parquet file or folder, or a Hub dataset name.")
    format: Optional[str] = setting(
        None, "text, alpaca (instruction/input/output), messages (chat), prompt_completion; None detects it from the "
        "columns.", FORMATS)
    split: str = setting("train", "Split to train on when the source has several.")
    eval: Union[float, str, None] = setting(
        None, "Held-out data: a fraction of the training rows (0.1), a file, or a split name.")
    columns: Union[dict, str, None] = setting(
        None, "The data's columns under lora_nb's names (text, instruction, input, output, messages, prompt, "
        "completion): {instruction: question, output: answer}; either way round, or question:instruction,"
        "answer:output. ShareGPT turns (from/value) in messages become role/content.")
    train_on: Optional[str] = setting(
        None, "Which tokens carry loss: last_turn (the last assistant turn of a conversation), assistant (every "
        "assistant turn; masked by rendering each conversation's turns where the chat template has no {% generation "
        "%} marks), all (every token, prompts included). None: assistant where the template marks assistant turns, "
        "else last_turn. alpaca/prompt_completion train the completion unless all; text always trains all. See what "
        "it does with lora_nb.data.check.", TRAIN_ON)

    def __post_init__(self) -> None:
        self.columns = column_map(self.columns)
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
    group_by_length: bool = setting(
        True, "Batch examples of similar length together (within random groups of up to 50 batches, as transformers' "
        "length-grouped sampler does): far less padding on mixed-length data, ~1.1x faster here; every epoch still "
        "sees every example once. Off: batches in random order (TRL's default).")
    scheduler: str = setting("cosine", "Learning-rate schedule.", SCHEDULERS)
    warmup: float = setting(0.03, "Warm-up: a fraction of the steps (< 1) or a number of steps.")
    eval_steps: Optional[int] = setting(
        None, "Evaluate every this many steps (default: 10 times a run) when there is eval data.")
    logging_steps: int = setting(1, "Log loss, lr and grad norm every this many steps.")
    seed: int = setting(42, "Seed for the adapter's initialisation, data order and dropout.")
    gradient_checkpointing: Optional[bool] = setting(
        None, "Recompute activations in the backward pass to save memory, at about 1.3–3× the step time. Default "
        "(null): on only when lora_nb.estimate says a step would not fit in the memory free; the run's log.txt says "
        "which and why.")
    sft: dict = setting({}, "Any other SFTConfig argument, e.g. {weight_decay: 0.01}.")
    resume: Optional[str] = setting(
        None, "A run folder to continue from its last checkpoint (adapter, optimizer, scheduler, RNG, step); the run "
        "goes on in that folder.")
    mirror: Optional[str] = setting(
        None, "A folder to keep a copy of the run folder in as it is written (a mounted Drive: "
        "/content/drive/MyDrive/lora_runs): MIRROR/<run name> gets each checkpoint when it is saved, run.json and "
        "metrics.jsonl as they change, the adapter, log and chart at the end; every file whole, a checkpoint only "
        "complete. null: no copy.")
    report_to: Union[str, list, None] = setting(
        None, "Experiment trackers to log to as well (transformers' report_to): trackio, tensorboard, wandb or "
        "mlflow, or a list of them (trackio,tensorboard), each installed; null or none: only lora_nb's own run "
        "folder. tensorboard writes into the run folder's tensorboard/; trackio into its local database "
        "(TRACKIO_DIR), project: the folder above the run (lora_nb for runs/). 'all' is refused: name them.")
    early_stopping: Union[int, dict, None] = setting(
        None, "Stop once the eval metric has not improved for `patience` evals and keep the best eval's adapter: "
        "{patience: 3, metric: eval_loss, min_delta: 0.0} (metric: eval_loss or eval_mean_token_accuracy; min_delta: "
        "the least change that counts as better), or a number (the patience). Needs data.eval; checkpoints then "
        "follow the evals. null: off.")

    def __post_init__(self) -> None:
        _check_fields(self, "train")
        self.report_to = _check_trackers(self.report_to)
        self.early_stopping = early_stopping_setting(self.early_stopping)
        for key in ("batch_size", "grad_accum", "max_length", "logging_steps", "steps", "eval_steps"):
            value = getattr(self, key)
            if value is not None:  # only steps and eval_steps may be None
                check_positive(f"train.{key}", value)
        if self.epochs is not None:
            check_positive("train.epochs", self.epochs, whole=False)
        check_positive("train.lr", self.lr, whole=False)
        if self.warmup < 0:
            raise ConfigError("train.warmup", self.warmup, problem="must be 0 or more")


def column_map(value: Union[dict, str, None]) -> Optional[dict]:
    """``data.columns`` as a dict of column names: as given, or read from ``a:b,c:d`` (a magic's line).

    Example:
        >>> column_map("question:instruction, answer:output")
        {'question': 'instruction', 'answer': 'output'}
    """
    if isinstance(value, str):
        pairs = [part.split(":", 1) for part in value.split(",") if part.strip()]
        if not pairs or any(len(pair) != 2 for pair in pairs):
            raise ConfigError("data.columns", value, problem="must be a mapping, or pairs like question:instruction,"
                              "answer:output")
        value = {a.strip(): b.strip() for a, b in pairs}
    if isinstance(value, dict) and not all(isinstance(v, str) and v for v in value.values()):
        raise ConfigError("data.columns", value, problem="maps column names to column names")
    return value or None


SECTIONS = {"model": ModelSection, "lora": LoraSection, "data": DataSection, "train": TrainSection}


def _mention_names(section: str, cls: type) -> None:
    """Add to each setting's help the library names it also takes (``Also: lora_alpha (PEFT).``)."""
    for f in dataclasses.fields(cls):
        extra = also(f"{section}.{f.name}")
        if extra:
            f.metadata = types.MappingProxyType({**f.metadata, "help": f.metadata["help"] + extra})


for _name, _cls in SECTIONS.items():
    _mention_names(_name, _cls)


def _check_fields(section: Any, prefix: str) -> None:
    """Check that every setting of ``section`` is plain data (see :func:`check_plain`)."""
    for f in dataclasses.fields(section):
        check_plain(f"{prefix}.{f.name}", getattr(section, f.name))
        optional = flag_kind(f.type)
        if optional is not None:  # trust_remote_code="false" is a non-empty string: true to Python
            check_flag(f"{prefix}.{f.name}", getattr(section, f.name), optional=optional)


def _check_pattern(key: str, pattern: dict | None, valid: Any, what: str) -> None:
    """A {regex: value} override: each key must compile (PEFT matches it against module names)."""
    for regex, value in (pattern or {}).items():
        try:
            re.compile(regex)
        except re.error as e:
            raise ConfigError(key, regex, problem=f"key is not a valid regex ({e})") from None
        if not valid(value):
            raise ConfigError(f"{key}.{regex}", value, problem=f"must be {what}")


def _check_trackers(report_to: Any) -> Union[str, list, None]:
    """``train.report_to`` as null, one tracker's name or a list ("trackio,tensorboard" is a list); "all"
    (transformers: every integration installed, whichever they are) is refused so a recipe says what it logs to."""
    if report_to is not None and not isinstance(report_to, (str, list)):
        raise ConfigError("train.report_to", report_to, problem="must be a tracker's name or a list of them",
                          allowed=TRACKERS)
    names = trackers(report_to)
    for name in names:
        if name == "all":
            raise ConfigError("train.report_to", "all", problem="reports to whichever integrations are installed; "
                              "name the trackers instead (report_to=trackio,tensorboard)", allowed=TRACKERS)
        if name not in TRACKERS:
            raise ConfigError("train.report_to", name, problem="is not a tracker lora_nb reports to",
                              allowed=("none", *TRACKERS))
    return None if not names else names[0] if len(names) == 1 else names
