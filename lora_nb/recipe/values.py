"""Plain values for a recipe: YAML read safely, each value checked against its setting's type and
choices (:func:`coerce`), a section built from a mapping (:func:`build_section`, which also takes the
library names of :mod:`lora_nb.recipe.names`).

Example:
    >>> coerce("train.lr", "2e-4", float)
    0.0002
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from typing import Any, Union

from ..core.errors import ConfigError, check_flag, flag_kind
from .names import to_settings


def parse_yaml(text: str, what: str) -> Any:
    """Plain data from YAML ``text`` (safe_load: never executed); errors name ``what``.

    Anchors and aliases are refused: nested aliases let a few hundred bytes expand into hundreds of
    megabytes once the values are written out (the "billion laughs"), and a recipe has no need for them.

    Example:
        >>> parse_yaml("lora: {r: 8}", "recipe")
        {'lora': {'r': 8}}
        >>> parse_yaml("a: &x [1]\\nb: *x", "recipe")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: recipe: uses YAML anchors/aliases (&name / *name), ...: write the values out.

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
                lines = f"lines {seen[name]} and {key.start_mark.line + 1}"
                raise ConfigError(what, problem=f"gives {where} twice ({lines}), and YAML would keep only the last: "
                                                "keep one")
            seen[name] = key.start_mark.line + 1
            _refuse_repeated_keys(value, what, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_repeated_keys(item, what, f"{path}[{i}]")


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


def build_section(cls: type, raw: Any, prefix: str):
    """Build section ``cls`` from a dict, checking keys, types and choices; errors name ``prefix.key``.
    The libraries' names of its settings are taken too (:mod:`lora_nb.recipe.names`).

    Example:
        >>> from lora_nb.recipe.fields import LoraSection
        >>> build_section(LoraSection, {"lora_alpha": 64, "use_rslora": True}, "lora").variant
        'rslora'
    """
    if dataclasses.is_dataclass(raw):
        raw = dataclasses.asdict(raw)
    if not isinstance(raw, dict):
        raise ConfigError(prefix, raw, problem="must be a mapping of settings")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in to_settings(raw, fields, sections=(prefix,), prefix=f"{prefix}.").items():  # lora_alpha: alpha
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
