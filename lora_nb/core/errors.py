"""Errors written for people: the key, the value given, what is allowed, and the nearest match."""

from __future__ import annotations

import difflib
import functools
from typing import Any, Callable, Iterable, Optional, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class LoraNbWarning(UserWarning):
    """A warning from lora_nb itself: always shown, also while library messages are captured
    (:mod:`lora_nb.core.quiet`).

    Example:
        >>> import warnings
        >>> warnings.warn("r=128 is not below the smallest adapted dimension", LoraNbWarning)
    """


class ConfigError(ValueError):
    """A bad argument or setting. The message names the key, the value and what is allowed.

    It is a ``ValueError``, so scripts can catch it as one; the notebook layer shows it without a
    traceback. ``hint`` replaces the nearest allowed value as what "Did you mean" offers, written
    out (``"'steps' (max_steps in transformers)"``).

    Example:
        >>> raise ConfigError("lora.rank", problem="unknown key", allowed=["r", "alpha"])
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: lora.rank: unknown key. Allowed: r, alpha. Did you mean 'r'?
    """

    def __init__(self, key: str, value: Any = None, *, allowed: Iterable[Any] | None = None, problem: str = "",
                 hint: str | None = None):
        self.key, self.value = key, value
        self.allowed = [str(a) for a in allowed] if allowed is not None else None
        parts = [f"{key}: {problem or 'invalid value'}"]
        if value is not None:
            parts[0] += f" (got {value!r})"
        parts[0] += "."
        if self.allowed is not None:
            shown = ", ".join(self.allowed[:20]) + (f", … ({len(self.allowed)} in all)"
                                                    if len(self.allowed) > 20 else "")
            parts.append(f"Allowed: {shown}.")
            if hint is None:
                match = nearest(value if isinstance(value, str) else key.rsplit(".", 1)[-1], self.allowed)
                hint = repr(match) if match else None
        if hint:
            parts.append(f"Did you mean {hint}?")
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


def first_line(error: BaseException, prefer: str = "") -> str:
    """The line of a library's (often multi-line) message that says what is wrong: the first, or the
    first holding ``prefer``.

    Example:
        >>> first_line(ValueError("size mismatch.\\nsee above"))
        'size mismatch'
    """
    lines = [line.strip().rstrip(".") for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if prefer and prefer in line), lines[0] if lines else type(error).__name__)


def strict_flags(fn: F) -> F:
    """Refuse anything but ``True``/``False`` for ``fn``'s parameters annotated ``bool``
    (``Optional[bool]`` also takes None), before ``fn`` runs.

    A flag is what it says: ``trust_remote_code="false"`` is a non-empty string, which Python
    reads as true, so it is refused rather than obeyed. The annotations are read on the first
    call (they may name types imported later).

    Example:
        >>> @strict_flags
        ... def load(name: str, *, trust_remote_code: bool = False): ...
        >>> load("x", trust_remote_code="false")
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: trust_remote_code: must be True or False, not text (got 'false').
    """
    flags: dict[str, bool] = {}  # parameter -> whether it also takes None

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if not flags:
            flags.update(_flag_parameters(fn)) or flags.setdefault("", False)
        bound = _signature(fn).bind_partial(*args, **kwargs).arguments
        for name, optional in flags.items():
            if name in bound:
                check_flag(name, bound[name], optional=optional)
        return fn(*args, **kwargs)

    checked.__lora_nb_flags__ = True  # type: ignore[attr-defined]
    return checked  # type: ignore[return-value]


def check_flag(key: str, value: Any, *, optional: bool = False) -> None:
    """Refuse ``value`` unless it is a real bool (or None when ``optional``), naming ``key``.

    Example:
        >>> check_flag("packing", "no")
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: packing: must be True or False, not text (got 'no').
    """
    if isinstance(value, bool) or (optional and value is None):
        return
    kind = "text" if isinstance(value, str) else type(value).__name__
    raise ConfigError(key, value, problem=f"must be True or False{' (or None)' if optional else ''}, not {kind}")


def flag_kind(hint: Any) -> Optional[bool]:
    """Whether annotation ``hint`` is a flag: None if not, False for ``bool``, True for
    ``Optional[bool]`` (None allowed). Postponed annotations (plain text) count too.

    Example:
        >>> flag_kind("Optional[bool]"), flag_kind(bool), flag_kind(int)
        (True, False, None)
    """
    if isinstance(hint, str):
        spelled = hint.replace(" ", "").replace("typing.", "")
        return {"bool": False, "Optional[bool]": True, "bool|None": True, "None|bool": True}.get(spelled)
    if hint is bool:
        return False
    return True if hint == Optional[bool] else None


def _flag_parameters(fn: Callable) -> dict[str, bool]:
    kinds = {name: flag_kind(p.annotation) for name, p in _signature(fn).parameters.items()}
    return {name: optional for name, optional in kinds.items() if optional is not None}


@functools.lru_cache(maxsize=None)
def _signature(fn: Callable) -> Any:
    import inspect  # here, not at the top: importing lora_nb stays cheap

    return inspect.signature(fn)


@strict_flags
def is_positive(value: Any, *, whole: bool = True) -> bool:
    """True for a positive whole number (``whole``) or a positive number; a bool is neither.

    Example:
        >>> is_positive(8), is_positive(True), is_positive(0.5), is_positive(0.5, whole=False)
        (True, False, False, True)
    """
    kinds = int if whole else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and value > 0


@strict_flags
def check_positive(key: str, value: Any, *, whole: bool = True, of: str = "", problem: Optional[str] = None) -> None:
    """Raise the one ConfigError for a setting that must be a positive whole number (or, not ``whole``, a
    positive number) ``of`` something: ``key: must be a positive whole number of runs (got 0).``

    Example:
        >>> check_positive("limit", 0, of="runs")
        Traceback (most recent call last):
        lora_nb.core.errors.ConfigError: limit: must be a positive whole number of runs (got 0).
    """
    if not is_positive(value, whole=whole):
        kind = "whole number" if whole else "number"
        raise ConfigError(key, value, problem=problem or f"must be a positive {kind}" + (f" of {of}" if of else ""))
