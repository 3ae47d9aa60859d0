"""The ``%lora`` verbs: each registered once with its help, example, flags and settings, which the
help text, each verb's argument parser and ``%lora help VERB`` are all built from."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from IPython.core.error import UsageError

from ...core.errors import nearest, strict_flags
from ...recipe.schema import SECTIONS
from .arguments import Parser


@dataclass
class Verb:
    """One ``%lora`` verb: ``fn(magics, args, cell)``, its one-line help and example, a function
    adding its flags to an argument parser, what its free words are (``"settings"``: ``key=value``;
    ``"prompt"``: the rest of the line), the ``key=value`` settings it takes, as Recipe fields, and
    whether it uses the HF libraries (``libraries``: their output is captured around it, which
    imports them; ``%lora help`` does without, and answers in a fraction of the time)."""

    fn: Callable[..., Any]
    help: str
    example: str
    flags: Callable[[argparse.ArgumentParser], None] = lambda p: None
    free: str = ""
    keys: dict[str, dataclasses.Field] = field(default_factory=dict)
    libraries: bool = True


VERBS: dict[str, Verb] = {}


@strict_flags
def verb(name: str, help: str, example: str, flags: Callable[[argparse.ArgumentParser], None] = lambda p: None,
         free: str = "", keys: Optional[dict[str, dataclasses.Field]] = None, libraries: bool = True) -> Callable:
    """Register ``fn(magics, args, cell)`` as ``%lora name`` (a decorator).

    Example:
        >>> @verb("hello", "say hello", "%lora hello")  # doctest: +SKIP
        ... def hello(m, args, cell):
        ...     print("hello")
    """
    def register(fn: Callable) -> Callable:
        VERBS[name] = Verb(fn, help, example, flags, free, keys or {}, libraries)
        return fn
    return register


@strict_flags
def find_verb(name: str, cell_given: bool = True) -> Verb:
    """The verb called ``name``; a UsageError naming the verbs (and the nearest) for any other name.
    ``recipe`` is a verb only for a cell (``cell_given``).

    Example:
        >>> find_verb("stop").example
        '%lora stop'
    """
    if name not in VERBS or name == "recipe" and not cell_given:
        hint = nearest(name, VERBS)
        raise UsageError(f"%lora has no verb {name!r}. Verbs: {', '.join(v for v in VERBS if v != 'recipe')}."
                         + (f" Did you mean {hint!r}?" if hint else ""))
    return VERBS[name]


def parser_for(name: str) -> Parser:
    """The argument parser of verb ``name``: its flags, then its key=value settings or prompt.

    Example:
        >>> parser_for("train").parse_intermixed_args(["steps=2", "--background"]).settings
        ['steps=2']
    """
    spec = VERBS[name]
    parser = Parser(prog=f"lora {name}", add_help=False)
    spec.flags(parser)
    if spec.free == "settings":
        parser.add_argument("settings", nargs="*", metavar="key=value", help="settings, listed below")
    elif spec.free == "prompt":
        parser.add_argument("settings", nargs="*", metavar="prompt",
                            help="the prompt (quoted), or a %%%%lora cell's body")
    return parser


def help_text() -> str:
    """The verbs with one-line descriptions and an example each (``%lora help``).

    Example:
        >>> help_text().splitlines()[0]
        '%lora VERB [args] — LoRA/QLoRA fine-tuning in the notebook'
    """
    width = max(len(v) for v in VERBS)
    lines = ["%lora VERB [args] — LoRA/QLoRA fine-tuning in the notebook", ""]
    for name, spec in VERBS.items():
        if name != "recipe":
            lines.append(f"  {name:<{width}}  {spec.help}\n  {'':<{width}}  e.g. {spec.example}")
    lines += ["", "%%lora [inject|train|generate|compare] with a YAML body (or the prompt, verbatim);",
              "a bare %%lora cell is a whole recipe: model, lora, data, train sections. Keys: " + ", ".join(SECTIONS),
              "%lora help VERB (or %lora VERB --help): the verb's flags and every setting with its default."]
    return "\n".join(lines)


def verb_help(name: str) -> str:
    """One verb in full: its usage and flags, every ``key=value`` setting it takes with its default
    and help (the Recipe's field definitions), and an example.

    Example:
        >>> from lora_nb.notebook.magics import verb_help
        >>> print(verb_help("stop"))
        %lora stop — stop the background run after its current step (adapter kept)
        <BLANKLINE>
        usage: %lora stop
        <BLANKLINE>
        example: %lora stop
    """
    spec = find_verb(name)
    parts = [f"%lora {name} — {spec.help}", parser_for(name).format_help().strip()]
    if name == "recipe":
        parts[1] = "usage: a %%lora cell (no arguments) holding YAML sections: model, lora, data, train, output_dir"
    if spec.keys:
        width = max(len(k) for k in spec.keys)
        rows = [(key, _default(f), f.metadata.get("help", "") + _choices(f)) for key, f in spec.keys.items()]
        shown = max(len(d) for _, d, _ in rows)
        lines = ["settings (key=value; a value is read as YAML, or is the notebook variable of that name):"
                 if spec.free == "settings" else "keys (section.key in the cell's YAML):"]
        for key, default, text in rows:
            lead = f"  {key:<{width}}  {default:<{shown}}  "
            lines.append(textwrap.fill(text, width=max(100, len(lead) + 40), initial_indent=lead,
                                       subsequent_indent=" " * len(lead)))
        parts.append("\n".join(lines))
    parts.append("example: " + spec.example.replace("\n", "\n         "))
    return "\n\n".join(parts)


def _default(f: dataclasses.Field) -> str:
    """A field's default written as a user types it: null, true, 0.0002, cosine, {}."""
    import yaml

    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if value == "":  # a model name or data path: there is no default
        return "required"
    if isinstance(value, float):
        return f"{value:g}"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _choices(f: dataclasses.Field) -> str:
    choices = f.metadata.get("choices")
    return f" One of: {', '.join(map(str, choices))}." if choices else ""
