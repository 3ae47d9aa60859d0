"""Every branch on a library's version, in one place. lora_nb supports a range of releases (the
README's tested matrix: Colab's transformers 5.15 to today's); where they differ, the difference
is decided here, by asking the installed library what it has (a field, a keyword) rather than
comparing version numbers, and tests/test_compat.py forces each side whatever is installed.

Exported scripts run on whatever their user has installed, so :mod:`lora_nb.export.script` copies the
functions a script needs from this file into it, as it copies the other modules of :mod:`lora_nb.hf`: this file
imports nothing from lora_nb, and its imports sit inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

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
