"""Every branch on a library's version, in one place. lora_nb supports a range of releases (the
README's tested matrix: Colab's transformers 5.15 to today's); where they differ, the difference
is decided here, by asking the installed library what it has (a field, a keyword) rather than
comparing version numbers, and tests/test_compat.py forces each side whatever is installed.

Exported scripts run on whatever their user has installed, so :mod:`lora_nb.export.script` copies the
functions a script needs from this file into it, as it copies the other modules of :mod:`lora_nb.hf`: this file
imports nothing from lora_nb, and its imports sit inside the functions.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from trl import SFTConfig

# The versions CI runs (.ci/run): the oldest in the lowest and colab jobs, the newest in the latest
# job (colab's Python). pyproject's lower bounds are the oldest (tests/test_compat.py checks), and the
# README's support matrix is this table. lora-nb doctor says what is installed outside it.
TESTED = {
    "python": ("3.10", "3.13"),
    "torch": ("2.6.0", "2.13.0"),
    "transformers": ("5.15.0", "5.25.0"),
    "peft": ("0.20.0", "0.21.2"),
    "trl": ("1.9.0", "1.16.0"),
    "accelerate": ("1.14.0", "1.16.0"),
    "datasets": ("4.7.0", "5.2.0"),
    "bitsandbytes": ("0.49.0", "0.50.2"),
    "ipython": ("7.34.0", "9.19.1"),
    "ipykernel": ("6.17.0", "7.4.0"),
    "ipywidgets": ("7.7.1", "8.1.9"),
}

# TrainingArguments fields transformers 5.23 renamed, newest name -> the one older releases (Colab's 5.15) take.
RENAMED_TRAINING_FIELDS = {"activation_checkpointing": "gradient_checkpointing",
                           "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs"}


def sft_config_fields() -> set[str]:
    """The keyword names the installed TRL's ``SFTConfig`` takes.

    Example:
        >>> "max_length" in sft_config_fields()
        True
    """
    import dataclasses

    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig) if f.init}


def sft_keywords(kwargs: dict[str, Any], fields: Iterable[str] | None = None) -> dict[str, Any]:
    """``kwargs`` for ``SFTConfig`` in their newest names, each the installed release lacks renamed to its
    older name (``fields``: another release's names, to force a side in a test).

    Example:
        >>> sft_keywords({"activation_checkpointing": True}, fields={"gradient_checkpointing"})
        {'gradient_checkpointing': True}
        >>> sft_keywords({"activation_checkpointing": True}, fields={"activation_checkpointing"})
        {'activation_checkpointing': True}
    """
    fields = sft_config_fields() if fields is None else fields
    return {key if key in fields else RENAMED_TRAINING_FIELDS.get(key, key): value for key, value in kwargs.items()}


def sft_config(kwargs: dict[str, Any]) -> SFTConfig:
    """TRL's ``SFTConfig`` from keywords in their newest names, on whichever release is installed.

    Example:
        >>> sft_config({"output_dir": "out", "bf16": False, "activation_checkpointing": False}).output_dir
        'out'
    """
    from trl import SFTConfig

    return SFTConfig(**sft_keywords(kwargs))


def tooltip_keyword(ipywidgets_version: str) -> str:
    """The keyword that sets a widget's tooltip: ``tooltip`` in ipywidgets 8, ``description_tooltip``
    in 7 (Colab's 7.7.1).

    Example:
        >>> tooltip_keyword("7.7.1"), tooltip_keyword("8.1.5")
        ('description_tooltip', 'tooltip')
    """
    return "tooltip" if int(ipywidgets_version.split(".")[0]) >= 8 else "description_tooltip"


# The line of TRL's add_fused_lm_head that decides which positions its chunked LM head projects (TRL 1.x).
_COMPACT_DECISION = "compact = _use_triton(hidden_states.device)"


def lm_head_switch(utils: Any = None) -> Any:
    """The module whose ``_use_triton`` decides, in TRL's fused LM head, whether only the labelled
    positions are projected — ``trl.trainer.utils`` where it does so (TRL 1.x from its fused head on,
    read from the function's source) — or None: no fused head (TRL 1.9), another layout, another major
    release. ``utils``: another module to ask (a test forces each side with it).

    Example:
        >>> import types
        >>> lm_head_switch(types.SimpleNamespace(_use_triton=bool)) is None   # no fused LM head there
        True
    """
    import inspect

    try:
        import trl
        from trl.trainer import utils as trl_utils
    except ImportError:
        return None
    utils = trl_utils if utils is None else utils
    head, decide = getattr(utils, "add_fused_lm_head", None), getattr(utils, "_use_triton", None)
    if not trl.__version__.startswith("1.") or head is None or not callable(decide):
        return None
    try:
        source = inspect.getsource(head)
    except (OSError, TypeError):
        return None
    return utils if _COMPACT_DECISION in source else None


@contextmanager
def labelled_positions_only(utils: Any = None) -> Iterator[bool]:
    """While it is open, TRL's fused LM head projects only the positions that have a label on a CPU too;
    yields whether it could (False where :func:`lm_head_switch` finds no such decision: TRL then runs as
    it is).

    TRL computes the loss through a chunked LM head that projects only the labelled positions on CUDA
    and XPU, and every position elsewhere (prompt and padding too), so that Neuron's compiler does not
    see a new shape per batch. A CPU in eager mode compiles nothing: the log-probabilities are the same
    and a step takes 1.16–1.23× less CPU (SmolLM2-135M shape, mixed-length prompt/completion rows).
    TRL makes that decision with a private function; this changes it for CPU devices only, and puts the
    function back on leaving.

    Example:
        >>> with labelled_positions_only() as applied:   # doctest: +SKIP
        ...     trainer.train()
    """
    utils = lm_head_switch(utils)
    if utils is None:
        yield False
        return
    original = utils._use_triton
    utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield True
    finally:
        utils._use_triton = original
