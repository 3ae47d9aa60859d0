"""Reading a ``%lora`` line and cell: the words, ``key=value`` settings, a YAML cell body, flags' help.

Bad input raises IPython's ``UsageError`` (the one type IPython shows without a traceback) or a
``ConfigError`` (which ``%lora`` turns into one), naming the key, the value and what is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from typing import Any, Mapping, NoReturn, Optional

from IPython.core.error import UsageError

from ...core.errors import ConfigError
from ...recipe.names import to_settings
from ...recipe.schema import parse_yaml
from ..typed import read_value


class Parser(argparse.ArgumentParser):
    """argparse whose errors become UsageError instead of exiting the kernel.

    Example:
        >>> Parser(prog="lora stop", add_help=False).format_help().strip()
        'usage: %lora stop'
    """

    # prog is "lora train", without the "%": parse_intermixed_args stores the formatted usage back as a
    # %-template, where "%lora" would read as a format directive. The "%" is put back when shown.
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"%{self.prog}: {message}. Usage: %{self.format_usage().strip()[7:]}")

    def exit(self, status: int = 0, message: Optional[str] = None) -> NoReturn:
        raise UsageError(message or self.format_help())

    def format_help(self) -> str:
        return super().format_help().replace(f"usage: {self.prog}", f"usage: %{self.prog}", 1)


def overwrite_flag(p: argparse.ArgumentParser, help: str) -> None:
    """``--overwrite`` (``help`` says what it replaces), and ``--force``: the same flag under its
    old name, accepted but not shown in the help.

    Example:
        >>> p = argparse.ArgumentParser(); overwrite_flag(p, "replace it")
        >>> p.parse_args(["--force"]).overwrite, p.parse_args([]).overwrite
        (True, False)
    """
    p.add_argument("--overwrite", action="store_true", help=help)
    p.add_argument("--force", dest="overwrite", action="store_true", help=argparse.SUPPRESS)


def split_line(line: str) -> list[str]:
    """A magic's line as shell words (quotes group, as in a terminal).

    Example:
        >>> split_line('generate "Is 7 even?" --max-new-tokens 8')
        ['generate', 'Is 7 even?', '--max-new-tokens', '8']
    """
    try:
        return shlex.split(line)
    except ValueError as e:
        raise UsageError(f"%lora: cannot read the arguments ({e})") from None


def read_settings(items: list[str], allowed: Mapping[str, Any], names: Optional[Mapping[str, Any]] = None) -> dict:
    """``key=value`` items as a dict; keys checked against ``allowed`` (the verb's settings), each
    value read by :func:`~lora_nb.notebook.typed.read_value` (``names``: the notebook's variables).

    Example:
        >>> read_settings(["r=8", "lr=2e-4"], {"r": None, "lr": None})
        {'r': 8, 'lr': 0.0002}
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"%lora: expected key=value, got {item!r}")
        key, raw = item.split("=", 1)
        if key in out:
            raise ConfigError(key, problem=f"given twice ({key}={out[key]!r} and {item}): keep one")
        out[key] = read_value(raw, names)
    return to_settings(out, allowed, problem="unknown setting")  # lora_alpha=64 is alpha=64: recipe.names


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    """A recipe section's fields by name: the settings a verb takes, with their defaults and help.

    Example:
        >>> from lora_nb.recipe.schema import LoraSection
        >>> "r" in fields_of(LoraSection)
        True
    """
    return {f.name: f for f in dataclasses.fields(cls)}


def field_help(cls: type, name: str) -> str:
    """A Recipe field's help text, for an argparse flag (its % escaped).

    Example:
        >>> from lora_nb.recipe.schema import LoraSection
        >>> field_help(LoraSection, "r")[:14]
        'Rank of the up'
    """
    return fields_of(cls)[name].metadata["help"].replace("%", "%%")


def cell_yaml(cell: str, what: str) -> dict:
    """A ``%%lora what`` cell's body: YAML ``key: value`` lines (aliases refused), as a dict.

    Example:
        >>> cell_yaml("r: 8\\nalpha: 16", "inject")
        {'r': 8, 'alpha': 16}
    """
    body = parse_yaml(cell, f"%%lora {what}: the cell") or {}  # refuses aliases: no "billion laughs" cell
    if not isinstance(body, dict):
        raise UsageError(f"%%lora {what}: the cell must hold key: value lines, got {type(body).__name__}")
    return body


def section_body(cell: str, what: str, section: str) -> dict:
    """A cell body given flat (``r: 8``) or as its section (``lora: {r: 8}``).

    Example:
        >>> section_body("lora: {r: 8}", "inject", "lora") == section_body("r: 8", "inject", "lora")
        True
    """
    body = cell_yaml(cell, what)
    return body[section] if set(body) == {section} else body


def given(**flags: Any) -> dict:
    """The flags the user gave: the others are left to the API's own defaults (defined once, there).

    Example:
        >>> given(max_new_tokens=None, dtype="bf16")
        {'dtype': 'bf16'}
    """
    return {k: v for k, v in flags.items() if v is not None}
