"""The README stays true: its test command is CI's, its recipe reference is the code's."""

from __future__ import annotations

import re
from pathlib import Path

from lora_nb.recipe.schema import Recipe

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_has_the_two_commands_and_ci_runs_the_second():
    demo, tests = quick_start_commands()
    assert "lora-nb demo" in demo
    assert tests == "bash .ci/run"  # CI runs exactly this file
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()


def test_recipe_reference_is_generated_from_the_fields():
    start = README.index("<!-- generated from the field definitions")
    table = README[start:README.index("<!-- end of generated reference -->")].split("\n", 1)[1].strip()
    assert table == Recipe.reference(), "run Recipe.reference() and paste it into README.md"


def test_library_names_table_is_generated_from_the_names():
    from lora_nb.recipe.names import table

    start = README.index("<!-- generated from lora_nb/recipe/names.py")
    generated = README[start:README.index("<!-- end of generated names -->")].split("\n", 1)[1].strip()
    assert generated == table(), "run lora_nb.recipe.names.table() and paste it into README.md"


def test_magics_reference_has_every_verb():
    from lora_nb.notebook.magics import VERBS

    for name in VERBS:
        if name != "recipe":
            assert f"`%lora {name}" in README or f"/ `%lora {name}" in README, name


def test_every_guarantee_names_tests_that_exist():
    section = README.split("## What lora_nb guarantees", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| **")]
    assert len(rows) >= 6
    for row in rows:
        named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", row)
        assert named, row
        for path, test in named:
            source = (ROOT / path).read_text()
            assert not test or f"def {test}(" in source, f"{path}::{test} named in the README does not exist"
