"""A bare ``%%lora`` cell: a whole recipe in YAML, run end to end (registered last, as ``recipe``)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Optional

from ...recipe.schema import SECTIONS, Recipe
from .arguments import cell_yaml, fields_of
from .magic import LoraMagics
from .registry import verb

RECIPE_KEYS = {f"{section}.{f.name}": f for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
RECIPE_KEYS["output_dir"] = fields_of(Recipe)["output_dir"]


@verb("recipe", "a %%lora cell with a whole recipe (YAML) runs it end to end, always with a fresh adapter",
      "%%lora\nmodel: {name: ./m}\nlora: {r: 16, targets: attention}\ndata: {path: train.jsonl}\ntrain: {steps: 200}",
      keys=RECIPE_KEYS)
def _recipe(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    return m.shown(m.session.run_recipe(Recipe.from_dict(cell_yaml(cell or "", "recipe")), live=m.in_kernel()), False)
