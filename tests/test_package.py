"""The package itself: cheap to import, a small typed public surface, docs on every public function."""

from __future__ import annotations

import inspect
import subprocess
import sys

import lora_nb


def test_import_does_not_load_torch():
    code = "import sys, lora_nb; print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_resolves_and_has_an_example():
    for name in lora_nb.__all__:
        obj = getattr(lora_nb, name)
        doc = inspect.getdoc(obj) or ""
        assert doc, name
        if inspect.isfunction(obj):
            assert "Example" in doc, f"{name} has no example in its docstring"


def test_unknown_attribute_is_an_attribute_error():
    try:
        lora_nb.trian  # noqa: B018
    except AttributeError as e:
        assert "trian" in str(e)
    else:
        raise AssertionError("no AttributeError")
