"""The demo: the whole workflow offline, held-out accuracy clearly up."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from lora_nb.demo import run_demo


def test_demo_end_to_end(tmp_path, capsys):
    figures = run_demo(tmp_path / "demo")
    out = capsys.readouterr().out
    assert f"accuracy before: {figures['accuracy_before']:.2f}" in out
    assert f"accuracy after: {figures['accuracy_after']:.2f}" in out
    assert figures["accuracy_before"] <= 0.2 and figures["accuracy_after"] >= 0.9
    assert figures["merged_accuracy"] >= figures["accuracy_after"] - 0.05  # merging keeps what was learned
    assert figures["quant"] == "4bit"  # bitsandbytes runs 4-bit on this CPU: the demo is QLoRA
    for key in ("adapter", "merged", "chart", "script"):
        path = Path(figures[key])
        assert path.exists() and path.resolve().is_relative_to((tmp_path / "demo").resolve()), key
    assert open(figures["chart"], "rb").read(4) == b"\x89PNG"
    ast.parse(open(figures["script"]).read())
    assert json.loads((tmp_path / "demo" / "figures.json").read_text())["steps"] == 200
    assert "attention" in out and "all-linear (PEFT)" in out  # the discovery table was shown
