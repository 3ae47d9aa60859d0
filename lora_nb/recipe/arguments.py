"""The API's keyword arguments under the names users know: library names of settings, old parameter names,
and ``base`` in each of its forms.

Two conventions hold across the API:

* ``output_dir`` is the folder a function writes (``train``, ``save``, ``merge``, ``sweep``, the demo), as
  in transformers; the older ``folder``/``out_dir``/``out`` still work as keywords.
* ``base`` is the base model an adapter goes on: a Hub name or local folder (loaded for you), or a model
  already loaded, alone or as the ``(model, tokenizer)`` pair :func:`lora_nb.load` returns. Where training
  needs the tokenizer too (``run``, ``sweep``), a loaded base comes as that pair.

Example:
    >>> @known_names(renamed={"out": "output_dir"})
    ... def write(*, output_dir: str = "x", lr: float = 2e-4):
    ...     return output_dir, lr
    >>> write(out="y", learning_rate=1e-4)
    ('y', 0.0001)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
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


def recipe_base(fn: F) -> F:
    """For ``fn(recipe, *, base=...)``: a base given as a Hub name or folder is the model the recipe loads
    (``model.name``, with the recipe's quant and dtype); a loaded model without its tokenizer is refused.
    """
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
        base, recipe = bound.arguments.get("base"), bound.arguments.get("recipe")
        if isinstance(base, (str, os.PathLike)) and dataclasses.is_dataclass(getattr(recipe, "model", None)):
            named = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, name=os.fspath(base)))
            named.reasons = dict(getattr(recipe, "reasons", {}))
            bound.arguments.update(recipe=named, base=None)
        elif base is not None and not isinstance(base, (tuple, list, str, os.PathLike)):
            raise ConfigError("base", type(base).__name__, problem="a loaded model comes with its tokenizer here: "
                              "base=(model, tokenizer), as lora_nb.load returns (or a Hub name or folder)")
        return fn(*bound.args, **bound.kwargs)

    return call  # type: ignore[return-value]
