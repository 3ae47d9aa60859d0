"""The Recipe: one typed, validated description of a whole experiment.

A recipe has four sections — ``model`` (with quantisation), ``lora``, ``data``, ``train`` — plus
``output_dir``. Each setting is defined once, in :mod:`lora_nb.recipe.fields`, with its default and
help text; the API's keyword defaults, the YAML reference, the CLI and the notebook layer all read
these definitions. Values are checked by :mod:`lora_nb.recipe.values`; the names users know from
transformers, PEFT and TRL (``lora_alpha``, ``learning_rate``) are read by :mod:`lora_nb.recipe.names`.

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
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..core.errors import ConfigError, strict_flags
from ..core.files import atomic_write, check_free, write_error
# The sections and the value checks live in their own modules; imported here too, so
# ``from lora_nb.recipe.schema import LoraSection, build_section, ...`` keeps working everywhere.
from .fields import (BIASES, DTYPES, FORMATS, QUANTS, SCHEDULERS, SECTIONS, VARIANTS, DataSection,  # noqa: F401
                     LoraSection, ModelSection, TrainSection, setting)
from .names import unknown
from .values import build_section, check_plain, coerce, parse_yaml  # noqa: F401

__all__ = ["Recipe", "adapter_seed", "lora_kwargs", "model_kwargs", "train_kwargs",  # defined here
           "BIASES", "DTYPES", "FORMATS", "QUANTS", "SCHEDULERS", "SECTIONS", "VARIANTS", "DataSection", "LoraSection",
           "ModelSection", "TrainSection", "setting", "build_section", "check_plain", "coerce", "parse_yaml"]


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
    output_dir: Optional[str] = setting(
        None, "The run's folder: new or empty (default: a new runs/<date-time>-<label> folder, e.g. "
        "runs/20261128-101500-r16-attention-lr2e-4).")

    def __post_init__(self) -> None:
        # why each setting has its value ({"lora.r": "..."}), from lora_nb.suggest; written as YAML comments
        self.reasons: dict[str, str] = {}

    @classmethod
    def from_dict(cls, raw: dict) -> "Recipe":
        """Validate a plain dict (as read from YAML). Unknown keys suggest the nearest valid one. The
        names transformers, PEFT and TRL give settings are read as lora_nb's (``lora_alpha`` is
        ``alpha``, ``load_in_4bit: true`` is ``quant: 4bit``: :mod:`lora_nb.recipe.names`).

        Example:
            >>> Recipe.from_dict({"model": {"name": "m"}, "lora": {"rank": 8}})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            lora_nb.core.errors.ConfigError: lora.rank: unknown key. Allowed: r, alpha, ..., seed. Did you mean 'r'?
            >>> Recipe.from_dict({"model": {"name": "m"}, "lora": {"lora_alpha": 8}}).lora.alpha
            8.0
        """
        if not isinstance(raw, dict):
            raise ConfigError("recipe", type(raw).__name__, problem="must be a mapping of sections")
        allowed = list(SECTIONS) + ["output_dir"]
        for key in raw:
            if key not in allowed:
                raise unknown(str(key), allowed, sections=("",), problem="unknown section")
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

    @strict_flags
    def to_yaml(self, path: str | Path | None = None, *, overwrite: bool = False) -> str:
        """YAML text of the recipe; also written to ``path`` when given — a new file, or an existing one
        with ``overwrite=True``; written whole or not at all.

        Example:
            >>> "quant: null" in Recipe.from_dict({"model": {"name": "m"}}).to_yaml()
            True
        """
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if self.reasons:
            text = _commented(text, self.reasons)
        if path is not None:
            target = check_free(path, "path", overwrite=overwrite)
            try:
                atomic_write(target, text)
            except OSError as e:
                raise (write_error(e, target, "path") or e) from None
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
        nested = line.startswith("  ") and line[2] not in " -"
        dotted = key if not line.startswith(" ") else f"{section}.{key.strip()}" if nested else ""
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
    kwargs.update(format=recipe.data.format, split=recipe.data.split, eval=recipe.data.eval,
                  train_on=recipe.data.train_on, output_dir=recipe.output_dir, columns=recipe.data.columns)
    return kwargs


def _looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    return "\n" not in source and source.endswith((".yaml", ".yml"))

