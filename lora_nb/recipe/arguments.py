"""The API's keyword arguments under the names users know: the libraries' names of settings
(:mod:`lora_nb.recipe.names`) and the old names of renamed parameters.

Example:
    >>> @known_names(renamed={"out": "output_dir"})
    ... def write(*, output_dir: str = "x", lr: float = 2e-4):
    ...     return output_dir, lr
    >>> write(out="y", learning_rate=1e-4)
    ('y', 0.0001)
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, TypeVar

from ..core.errors import ConfigError
from .names import BY_NAME, to_settings, unknown

F = TypeVar("F", bound=Callable[..., Any])
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def known_names(renamed: Optional[dict[str, str]] = None) -> Callable[[F], F]:
    """Let the decorated function take its settings under their library names too (:data:`names.KNOWN`:
    ``learning_rate=`` is ``lr=``, ``load_in_4bit=True`` is ``quant="4bit"``), and each old parameter name
    in ``renamed`` (``{old: new}``). An unknown keyword is one line naming the nearest; a setting given
    twice with different values is refused. Put it above ``@strict_flags``, which then sees lora_nb's names.
    """
    renamed = renamed or {}

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **translated(fn, kwargs, renamed, positional=len(args)))

        return call  # type: ignore[return-value]

    return wrap


def translated(fn: Callable, kwargs: dict, renamed: dict[str, str], positional: int = 0) -> dict:
    """``kwargs`` for ``fn`` in lora_nb's names (see :func:`known_names`); the first ``positional``
    parameters were given by position."""
    params = _parameters(fn)
    names = [n for n, p in params.items() if p.kind in _KEYWORD]
    takes_more = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    by_position = list(params)[:positional]
    given = {}
    for name, value in kwargs.items():
        new = renamed.get(name, name)
        if new in by_position or new in given and given[new] is not value and given[new] != value:
            raise ConfigError(new, problem=f"given twice, as {new} and as {name}: keep one")
        given[new] = value
    ours = {k: v for k, v in given.items() if k in names or any(row.key in names for row in BY_NAME.get(k, ()))}
    rest = {k: v for k, v in given.items() if k not in ours}
    if rest and not takes_more:
        raise unknown(next(iter(rest)), names, problem="unknown keyword")
    return {**to_settings(ours, names), **rest}


@functools.lru_cache(maxsize=None)
def _parameters(fn: Callable) -> Any:
    return inspect.signature(fn).parameters
