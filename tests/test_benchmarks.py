"""The benchmark suite's own machinery: alternation and ratios, peak memory, fresh processes, the output files.

The cases themselves run in ``python -m benchmarks --quick`` (CI runs it after the tests).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder of the repository, not installed

from benchmarks.__main__ import main
from benchmarks.common import CaseResult, Fresh, PeakRSS, alternate, compare, machine, markdown_table, meets, write


def busy(n: int) -> dict:
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return {"s": time.perf_counter() - start}


def test_alternation_runs_the_sides_in_turn_and_the_ratio_points_to_the_slower_one():
    order = []

    def side(name, n):
        order.append(name)
        return busy(n)

    runs = alternate(lambda: side("light", 200_000), lambda: side("heavy", 800_000), pairs=3)
    row = compare("demo", "time", "s", runs, subject="light", baseline="heavy", unit="s", higher_is_better=False)
    assert order == ["light", "heavy"] * 3
    assert row.pairs == 3 and len(row.subject_runs) == len(row.baseline_runs) == 3
    assert row.subject_median < row.baseline_median
    assert 0 < row.spread[0] <= row.ratio <= row.spread[1] < 0.7  # a quarter of the work: well under 1, even loaded
    with pytest.raises(ValueError, match="at least one pair"):
        alternate(lambda: {}, lambda: {}, pairs=0)


def test_results_are_written_as_json_and_a_markdown_table(tmp_path):
    runs = ([{"t": 2.0}, {"t": 4.0}, {"t": 3.0}], [{"t": 1.0}, {"t": 1.0}, {"t": 1.0}])
    row = compare("speed", "tokens/s", "t", runs, subject="new", baseline="old", unit="tokens/s", higher_is_better=True,
                  goal="≥ 0.98")
    failed = CaseResult("broken", [], error="Traceback ...\nRuntimeError: no kernel")
    table = write([CaseResult("speed", [row], settings={"steps": 4}, notes=["a note"]), failed], machine(), tmp_path,
                  quick=True, seconds=12.0)

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["quick"] is True and data["seconds"] == 12.0
    expected = {"cpu", "cores", "avx512_bf16", "load_average", "torch", "transformers", "peft", "trl", "bitsandbytes"}
    assert expected <= set(data["machine"])
    saved = data["cases"][0]["rows"][0]
    assert (saved["ratio"], saved["subject_median"], saved["baseline_median"]) == (3.0, 3.0, 1.0)
    assert saved["subject_runs"] == [2.0, 4.0, 3.0] and saved["spread"] == [2.0, 4.0]
    assert data["cases"][1]["error"].endswith("no kernel")

    lines = table.splitlines()
    assert lines[0].startswith("| case | measure | subject | baseline |") and len(lines) == 4
    assert lines[2] == "| speed | tokens/s | new | old | 3 tokens/s | 1 tokens/s | **3.00×** (2.00–4.00) | ≥ 0.98 ✓ |"
    assert lines[3].startswith("| broken | failed: RuntimeError: no kernel |")
    md = (tmp_path / "results.md").read_text()
    assert table in md and "- a note" in md and '"steps": 4' in md and "avx512_bf16" in md


def test_a_goal_with_a_unit_is_a_budget_for_the_subject_not_the_ratio():
    runs = ([{"cpu": 0.8}, {"cpu": 0.9}, {"cpu": 0.7}], [{"cpu": 0.4}, {"cpu": 0.4}, {"cpu": 0.4}])
    within = compare("startup", "CPU time", "cpu", runs, subject="discover", baseline="build", unit="s",
                     higher_is_better=False, goal="< 1 s")
    assert within.ratio == 2.0 and meets(within) is True  # twice the baseline, yet inside its budget
    over = compare("startup", "CPU time", "cpu", (runs[0], [{"cpu": 2.0}] * 3), subject="discover", baseline="build",
                   unit="s", higher_is_better=False, goal="< 0.75 s")
    assert over.ratio < 1 and meets(over) is False
    assert "< 0.75 s ✗" in markdown_table([CaseResult("startup", [over])])


def test_peak_memory_sees_an_allocation_and_not_its_absence():
    with PeakRSS() as idle:
        busy(1000)
    with PeakRSS() as peak:
        block = bytearray(96 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touched: resident, not only reserved
        del block
    assert peak.growth_mib > 80  # the peak counts, though the block was freed before the end
    assert idle.growth_mib < 16


def test_fresh_runs_each_call_in_a_new_process_and_reports_its_failure():
    fresh = Fresh(preload=[])
    pids = {fresh(os.getpid), fresh(os.getpid)}
    assert len(pids) == 2 and os.getpid() not in pids
    with pytest.raises(RuntimeError, match="ValueError: invalid literal"):
        fresh(int, "not a number")


def test_an_unknown_case_is_refused_with_the_nearest_and_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        main(["--cases", "overhead,startpu"])
    err = capsys.readouterr().err
    assert "unknown case 'startpu' (did you mean startup?); cases: overhead, rerun, defaults, qlora_vs_lora," in err
