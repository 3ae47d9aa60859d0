"""Values typed by hand, read one way for the magics and the panel: a notebook variable by name, a
number, a YAML scalar or list, and comma-separated values (a sweep's) with brackets kept together."""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from ..core.errors import ConfigError

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def read_value(raw: str, names: Optional[Mapping[str, Any]] = None) -> Any:
    """A variable from ``names`` (the notebook's namespace) by name, else ``raw`` read as a YAML
    scalar (8, 2e-4, true, [a, b]), else ``raw`` itself.

    Example:
        >>> read_value("2e-4"), read_value("[q_proj, v_proj]"), read_value("data", {"data": [1]})
        (0.0002, ['q_proj', 'v_proj'], [1])
    """
    import yaml

    if names is not None and raw.isidentifier() and raw in names:
        return names[raw]
    if NUMBER.fullmatch(raw):  # YAML 1.1 would keep 2e-4 as a string
        return float(raw) if any(c in raw for c in ".eE") else int(raw)
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def comma_values(key: str, text: str, names: Optional[Mapping[str, Any]] = None) -> list:
    """The comma-separated values typed for setting ``key``, each read by :func:`read_value`;
    commas inside brackets or quotes stay (``[q_proj,v_proj],attention`` is two values). Unbalanced
    brackets or quotes, or an empty value between commas, are a ConfigError naming ``key``.

    Example:
        >>> comma_values("lr", "1e-4, 2e-4"), comma_values("targets", "[q_proj, v_proj], all-linear")
        ([0.0001, 0.0002], [['q_proj', 'v_proj'], 'all-linear'])
    """
    parts, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:  # inside '…' or "…": commas and brackets are text
            quote = "" if ch == quote else quote
        elif ch in "'\"" and (current.rstrip()[-1:] or ",") in "[{(,:":  # a quote opens only where a value starts
            quote = ch
        elif ch in "[{(" or ch in "]})":
            depth += 1 if ch in "[{(" else -1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        if depth < 0:
            break
        current += ch
    parts.append(current)
    if len(parts) > 1 and not parts[-1].strip():  # a trailing comma adds no value
        parts.pop()
    if depth or quote or (len(parts) > 1 and not all(part.strip() for part in parts)):
        raise ConfigError(key, text, problem="is not a comma-separated list of values (e.g. 4, 8, 16 or "
                                             "[q_proj, v_proj], all-linear)")
    return [read_value(part.strip(), names) for part in parts]
