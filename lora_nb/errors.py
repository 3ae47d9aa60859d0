"""Errors written for people: the key, the value given, what is allowed, and the nearest match."""

from __future__ import annotations

import difflib
from typing import Any, Iterable


class LoraNbWarning(UserWarning):
    """A warning from lora_nb itself: always shown, also while library messages are captured
    (:mod:`lora_nb.quiet`).

    Example:
        >>> import warnings
        >>> warnings.warn("r=128 is not below the smallest adapted dimension", LoraNbWarning)  # doctest: +SKIP
    """


class ConfigError(ValueError):
    """A bad argument or setting. The message names the key, the value and what is allowed.

    It is a ``ValueError``, so scripts can catch it as one; the notebook layer shows it without a
    traceback.

    Example:
        >>> raise ConfigError("lora.rank", problem="unknown key", allowed=["r", "alpha"])
        Traceback (most recent call last):
        ...
        lora_nb.errors.ConfigError: lora.rank: unknown key. Allowed: r, alpha. Did you mean 'r'?
    """

    def __init__(self, key: str, value: Any = None, *, allowed: Iterable[Any] | None = None, problem: str = ""):
        self.key, self.value = key, value
        self.allowed = [str(a) for a in allowed] if allowed is not None else None
        parts = [f"{key}: {problem or 'invalid value'}"]
        if value is not None:
            parts[0] += f" (got {value!r})"
        parts[0] += "."
        if self.allowed is not None:
            shown = ", ".join(self.allowed[:20]) + (f", … ({len(self.allowed)} in all)" if len(self.allowed) > 20 else "")
            parts.append(f"Allowed: {shown}.")
            hint = nearest(value if isinstance(value, str) else key.rsplit(".", 1)[-1], self.allowed)
            if hint:
                parts.append(f"Did you mean {hint!r}?")
        super().__init__(" ".join(parts))


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word`` (case-insensitive), or None when nothing is close.

    Example:
        >>> nearest("alpah", ["r", "alpha", "dropout"])
        'alpha'
    """
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    word = str(word).lower()
    match = difflib.get_close_matches(word, list(lowered), n=1, cutoff=0.6)
    if match:
        return lowered[match[0]]
    # a short name is far from its long form by edit distance: "rank" -> "r", "sched" -> "scheduler"
    for fits in (lambda c: word.startswith(c), lambda c: c.startswith(word)):
        prefixed = [c for c in lowered if fits(c)]
        if prefixed:
            return lowered[max(prefixed, key=len)]
    return None
