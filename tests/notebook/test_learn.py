"""The study-guide notebooks (notebooks/learn/) run in a real kernel, quietly, and end with a
results cell computed from the run — and each checks the claim it is about."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

LEARN = Path(__file__).resolve().parents[2] / "notebooks" / "learn"
NOTEBOOKS = sorted(p.stem for p in LEARN.glob("*.ipynb"))


def run(name: str, folder: Path):
    shutil.copy(LEARN / f"{name}.ipynb", folder)
    nb = nbformat.read(folder / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def outputs(nb):
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def test_there_are_learn_notebooks():
    assert "01_principle" in NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = nbformat.read(LEARN / f"{name}.ipynb", as_version=4)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runs_quietly_and_states_its_results_from_the_run(name, tmp_path, kernel_env):
    nb = run(name, tmp_path)
    stderr = [o.text for o in outputs(nb) if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"a red stderr box: {stderr}"
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    markdown = [o for o in last.outputs if "text/markdown" in o.get("data", {})]
    assert markdown, "the last cell computes the results sentence (a Markdown output), not typed-in numbers"
    if name == "01_principle":
        text = markdown[0]["data"]["text/markdown"]
        worst = float(re.search(r"agree to ([0-9.e+-]+)", text).group(1))
        assert worst < 1e-6, text  # the from-scratch layer computes what PEFT's does
        assert re.search(r"7B 0\.\d\d%, 13B 0\.\d\d%, 70B 0\.\d\d%", text), text
