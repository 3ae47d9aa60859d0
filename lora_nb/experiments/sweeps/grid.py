"""A sweep's grid: which recipe settings it may vary, the values it tries, and each value's part
of the points' folder names (``r4``, ``lr1e-4``, ``attention``)."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any, Optional

from ...core.errors import ConfigError
from ...recipe.schema import SECTIONS
from ...runs.labels import short_number

# Settings every point shares, and why a sweep cannot vary them.
FIXED = {
    "model": "the points share one loaded base model: run one sweep per model",
    "train.resume": "every point is a new run",
    "train.seed": "use seeds=n: the points then train with train.seed, train.seed + 1, …",
}


def setting_key(key: str) -> str:
    """The dotted recipe setting a grid key names: ``lr`` is ``train.lr``; ``lora.r`` stays as it is.

    Example:
        >>> setting_key("lr"), setting_key("lora.r")
        ('train.lr', 'lora.r')
        >>> setting_key("rank")   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: rank: is not a setting a sweep can vary. Allowed: ... Did you mean 'r'?
    """
    dotted = {f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls)}
    if "." in key:
        section = key.split(".", 1)[0]
        if section not in SECTIONS:
            raise ConfigError(section, problem=f"unknown section (in {key!r})", allowed=list(SECTIONS))
        if key not in dotted:
            raise ConfigError(key, problem="unknown setting", allowed=[f.name for f in fields(SECTIONS[section])])
        found = [key]
    else:
        found = sorted(d for d in dotted if d.split(".", 1)[1] == key)
    if len(found) > 1:
        raise ConfigError(key, problem=f"is a setting of several sections: write {' or '.join(found)}")
    if not found:
        free = sorted({d.split(".", 1)[1] for d in dotted if not _fixed(d)})
        raise ConfigError(key, problem="is not a setting a sweep can vary", allowed=free)
    if _fixed(found[0]):
        raise ConfigError(key, problem=f"cannot vary in a sweep: {_fixed(found[0])}")
    return found[0]


def _fixed(dotted: str) -> Optional[str]:
    return FIXED.get(dotted) or FIXED.get(dotted.split(".", 1)[0])


def grid_values(key: str, value: Any) -> list:
    """A grid entry's values: a list (or tuple, range) is the values to try; anything else one value.

    Example:
        >>> grid_values("r", [4, 8]), grid_values("steps", 50), grid_values("targets", [["q_proj", "v_proj"]])
        ([4, 8], [50], [['q_proj', 'v_proj']])
    """
    values = list(value) if isinstance(value, (list, tuple, range)) else [value]
    if not values:
        raise ConfigError(key, values, problem="needs at least one value to try")
    for i, v in enumerate(values):
        if v in values[:i]:
            raise ConfigError(key, v, problem="is listed twice")
    return values


def value_labels(dotted: str, values: list) -> list[str]:
    """Each value's part of the points' folder names; the values' numbers (path1, path2) where
    their names would coincide once shortened to file-name-safe characters.

    Example:
        >>> value_labels("lora.r", [4, 8]), value_labels("data.path", ["a/x.jsonl", "a x.jsonl"])
        (['r4', 'r8'], ['path1', 'path2'])
    """
    named = [value_label(dotted, value) for value in values]
    if len(set(named)) == len(named):
        return named
    return [f"{dotted.split('.', 1)[1]}{i}" for i in range(1, len(values) + 1)]


def value_label(dotted: str, value: Any) -> str:
    """A setting's value in a few file-name-safe characters: r4, lr1e-4, attention, packing-true.

    Example:
        >>> value_label("lora.r", 4), value_label("train.lr", 1e-4), value_label("lora.targets", ["q_proj", "v_proj"])
        ('r4', 'lr1e-4', 'q_proj+v_proj')
    """
    name = dotted.split(".", 1)[1]
    if isinstance(value, bool) or value is None:
        text = f"{name}-{str(value).lower()}"
    elif isinstance(value, (int, float)):
        text = name + short_number(value)
    elif isinstance(value, list):
        text = "+".join(map(str, value))
    elif isinstance(value, dict):
        text = "-".join(f"{k}{v}" for k, v in value.items())
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("._")[:40] or name
