"""The tested matrix and what says it: lora-nb doctor, %lora doctor, the %load_ext line, and
pyproject's lower bounds, which must be the matrix's oldest versions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lora_nb.core import doctor as support
from lora_nb.hf.compat import TESTED

ROOT = Path(__file__).resolve().parents[1]
OLDEST = {name: oldest for name, (oldest, _) in TESTED.items()}


def test_each_verdict_and_what_it_tells_to_run():
    assert support.verdict("transformers", "5.14.1") == "older"
    assert support.verdict("transformers", "5.15.0") == "tested"
    assert support.verdict("torch", "2.11.0+cu128") == "tested"  # a local build tag is the same release
    assert support.verdict("peft", "0.22.0.dev0") == "newer"
    assert support.verdict("trl", None) == "missing"
    assert support.verdict("python", "3.13.15") == "tested" and support.verdict("python", "3.9.18") == "older"
    lines = support.outside({"transformers": "5.14.1", "peft": "9.0.0", "trl": None, "python": "3.9.18"})
    assert lines == [
        "transformers 5.14.1 is older than lora_nb is tested with (5.15.0–5.25.0): "
        "pip install -U 'transformers>=5.15.0'",
        f"peft 9.0.0 is newer than lora_nb is tested with (0.20.0–{TESTED['peft'][1]}); "
        f"if something breaks: pip install 'peft=={TESTED['peft'][1]}'",
        "trl is not installed: pip install 'trl>=1.9.0'",
        "Python 3.9.18 is older than lora_nb supports (3.10–3.13): use Python 3.10 or newer",
    ]
    assert support.outside(dict(OLDEST)) == []


def test_pyproject_lower_bounds_are_the_oldest_tested_versions():
    text = (ROOT / "pyproject.toml").read_text()
    bounds = dict(re.findall(r'"([a-z]+)>=([0-9.]+)', text))
    assert re.search(r'requires-python = ">=([0-9.]+)"', text).group(1) == OLDEST["python"]
    for name, oldest in OLDEST.items():
        if name != "python":
            assert bounds.get(name) == oldest, (
                f"pyproject's {name} bound {bounds.get(name)} is not the oldest tested {oldest}")


def test_the_readme_matrix_is_the_tested_one():
    readme = (ROOT / "README.md").read_text()
    for name, (oldest, newest) in TESTED.items():
        assert re.search(rf"^\| {re.escape(name)} \| {re.escape(oldest)} \| {re.escape(newest)} \|", readme, re.M), name


def test_lora_nb_doctor_prints_the_table(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lora_nb.cli", "doctor"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for row in ("python", "transformers", "ipywidgets", "device", "dtype auto", "4-bit backend", "lora_nb cache",
                "offline"):
        assert re.search(rf"^{re.escape(row)} ", done.stdout, re.M), row
    versions = support.installed()
    assert f"transformers        {versions['transformers']}" in done.stdout
    assert ("all versions inside the tested matrix" in done.stdout) == (support.outside() == [])


@pytest.mark.parametrize("versions, said", [
    (OLDEST, ""),
    ({**OLDEST, "transformers": "5.10.0"},
     "lora_nb: transformers 5.10.0 is older than lora_nb is tested with (5.15.0–5.25.0): "
     "pip install -U 'transformers>=5.15.0'. %lora doctor for details.\n"),
    ({**OLDEST, "transformers": "5.10.0", "peft": None},
     "lora_nb: transformers 5.10.0 is older than lora_nb is tested with (5.15.0–5.25.0): "
     "pip install -U 'transformers>=5.15.0' (and 1 more). %lora doctor for details.\n"),
], ids=["inside", "one outside", "two outside"])
def test_load_ext_says_one_line_only_when_something_is_outside(shell, capsys, monkeypatch, versions, said):
    monkeypatch.setattr(support, "installed", lambda: dict(versions))
    shell.run_line_magic("load_ext", "lora_nb")
    assert capsys.readouterr().out == said


def test_lora_doctor_shows_the_report(shell):
    shell.run_line_magic("load_ext", "lora_nb")
    report = shell.run_line_magic("lora", "doctor")
    assert isinstance(report, support.Report) and "<table" in report._repr_html_()
    assert [row[0] for row in report.rows][:len(TESTED)] == list(TESTED)
