"""``%lora`` and ``%%lora``: one small function per verb, each calling the session (and so the API).

Arguments follow IPython-magic habits: flags (``--4bit``), ``key=value`` for recipe fields
(values read as YAML scalars: ``r=8``, ``lr=2e-4``, ``targets=[q_proj, v_proj]``), and a name
from the notebook's namespace as a value (``data=my_dataset``). Bad input raises IPython's
``UsageError`` itself — the one type IPython shows without a traceback — naming the key, the value
and what is allowed.

Modules: ``arguments`` (reading the line, ``key=value`` settings, a cell's YAML), ``registry`` (the
verbs, their parsers and help), ``magic`` (``LoraMagics``), then the verbs by pipeline step —
``model``, ``training``, ``answers``, ``writing``, ``tools`` and ``recipe_cell`` (imported in that
order: the order ``%lora help`` lists them in).
"""

from __future__ import annotations

# each registers its verbs, in this order (the order of %lora help): not alphabetical
from . import model, training, answers, writing, tools, recipe_cell  # noqa: F401, I001  # isort: skip
from .magic import LoraMagics
from .registry import VERBS, Verb, help_text, verb, verb_help

__all__ = ["LoraMagics", "VERBS", "Verb", "help_text", "verb", "verb_help"]
