"""The ``%lora`` line magic and ``%%lora`` cell magic: read the line, find the verb, run it with
library noise captured, and turn a ConfigError into IPython's traceback-free UsageError."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Mapping, Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from ...core.errors import ConfigError, strict_flags
from ...core.quiet import captured
from ..session import Session
from ..typed import read_value
from .arguments import read_settings, split_line
from .registry import find_verb, parser_for, verb_help


@magics_class
class LoraMagics(Magics):
    """The ``%lora`` line magic and ``%%lora`` cell magic.

    Example:
        >>> get_ipython().register_magics(LoraMagics)  # what %load_ext lora_nb does  # doctest: +SKIP
    """

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.session = Session()

    @line_cell_magic
    def lora(self, line: str = "", cell: Optional[str] = None) -> Any:
        """LoRA/QLoRA fine-tuning. ``%lora help`` lists the verbs with an example each."""
        tokens = split_line(line)
        name = tokens[0] if tokens else ("recipe" if cell is not None else "help")
        spec = find_verb(name, cell_given=cell is not None)
        if {"-h", "--help"} & set(tokens[1:]):
            print(verb_help(name))
            return None
        args = parser_for(name).parse_intermixed_args(tokens[1:])  # flags before, between or after key=value
        # library noise logged and counted; each API call hides its own bars
        quiet = captured(progress=True) if spec.libraries else nullcontext()
        try:
            with quiet as log:
                result = spec.fn(self, args, cell)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        if log is not None and log.count:
            print(f"({log.summary()})")
        return result

    def settings(self, items: list[str], allowed: Mapping[str, Any]) -> dict[str, Any]:
        """``key=value`` items as a dict; keys checked against ``allowed`` (the verb's settings)."""
        return read_settings(items, allowed, self.shell.user_ns)

    def value(self, raw: str) -> Any:
        """A notebook variable by name, else the text read as a YAML scalar (8, 2e-4, true, [a, b])."""
        return read_value(raw, self.shell.user_ns)

    def in_kernel(self) -> bool:
        """True in a Jupyter kernel (display handles render); False in terminal IPython."""
        return getattr(self.shell, "kernel", None) is not None

    @strict_flags
    def shown(self, run: Any, background: bool = False) -> Any:
        """The Run as the cell's value only where nothing showed it yet: in a kernel the live chart and
        the result line already did (one chart, one line per train cell); a background run shows its
        own. In terminal IPython (no live chart) it is the cell's value, printed as its table."""
        return None if background or self.in_kernel() else run
