"""What every benchmark case shares: alternation, medians, peak memory, fresh processes, the machine, the table.

The one rule: a comparison runs its two sides alternately in one process run (A, B, A, B, …),
and its result is the ratio subject ÷ baseline (the median of the per-pair ratios, so a machine
that slows down halfway through slows both sides of a pair alike), with each side's median
beside it — never a lone absolute time. Nothing here imports torch: the orchestrating process
stays light and the heavy libraries load once, in the process that forks the measuring ones.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import statistics
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

Metrics = dict[str, float]
PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "ipykernel")


@dataclass
class Row:
    """One line of the results table: a measure, its two sides' medians and their ratio.

    ``ratio`` is the median over pairs of subject ÷ baseline; ``spread`` the lowest and highest
    pair's ratio (how much to trust it); ``higher_is_better`` says which way is good.
    """

    case: str
    measure: str
    subject: str
    baseline: str
    unit: str
    subject_median: float
    baseline_median: float
    ratio: float
    spread: tuple[float, float]
    pairs: int
    higher_is_better: bool
    goal: str = ""  # "≥ 0.98", "≤ 1.02" or "= 1.00": what the ratio should be; "< 1 s": the subject median
    subject_runs: list[float] = field(default_factory=list)
    baseline_runs: list[float] = field(default_factory=list)


@dataclass
class CaseResult:
    """A case's rows, the settings it ran with and what a reader must know to read it (``notes``)."""

    case: str
    rows: list[Row]
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


def alternate(subject: Callable[[], Metrics], baseline: Callable[[], Metrics],
              pairs: int) -> tuple[list[Metrics], list[Metrics]]:
    """Run ``subject``, ``baseline``, ``subject``, ``baseline``, … (``pairs`` of each); return both sides' metrics.

    Example:
        >>> a, b = alternate(lambda: {"x": 1.0}, lambda: {"x": 2.0}, pairs=3)
        >>> [m["x"] for m in a], [m["x"] for m in b]
        ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    """
    if pairs < 1:
        raise ValueError(f"pairs={pairs}: a comparison needs at least one pair")
    subjects, baselines = [], []
    for _ in range(pairs):
        subjects.append(subject())
        baselines.append(baseline())
    return subjects, baselines


def compare(case: str, measure: str, key: str, runs: tuple[Sequence[Metrics], Sequence[Metrics]], *, subject: str,
            baseline: str, unit: str, higher_is_better: bool, goal: str = "") -> Row:
    """The :class:`Row` for metric ``key`` of alternated ``runs`` (as :func:`alternate` returns them).

    Example:
        >>> row = compare("demo", "time", "s", ([{"s": 1.0}, {"s": 3.0}], [{"s": 2.0}, {"s": 2.0}]),
        ...               subject="fast", baseline="slow", unit="s", higher_is_better=False)
        >>> row.ratio, row.spread, row.subject_median
        (1.0, (0.5, 1.5), 2.0)
    """
    a = [float(m[key]) for m in runs[0]]
    b = [float(m[key]) for m in runs[1]]
    ratios = [x / y for x, y in zip(a, b, strict=True) if y]
    return Row(case=case, measure=measure, subject=subject, baseline=baseline, unit=unit,
               subject_median=statistics.median(a), baseline_median=statistics.median(b),
               ratio=statistics.median(ratios) if ratios else float("nan"),
               spread=(min(ratios), max(ratios)) if ratios else (float("nan"), float("nan")),
               pairs=len(ratios), higher_is_better=higher_is_better, goal=goal, subject_runs=a, baseline_runs=b)


def meets(row: Row) -> Optional[bool]:
    """Whether ``row`` meets its goal (``=`` means equal to two decimals); None without a goal. A goal is
    on the ratio, or, when a unit follows the number ("< 1 s"), on the subject's median: a budget the
    operation has whatever its baseline costs.

    Example:
        >>> meets(Row("c", "m", "a", "b", "s", 1.0, 1.0, 0.97, (0.9, 1.0), 3, True, goal="≥ 0.98"))
        False
        >>> meets(Row("c", "m", "a", "b", "s", 0.4, 0.5, 0.8, (0.7, 0.9), 3, False, goal="< 1 s"))
        True
    """
    if not row.goal:
        return None
    op, value, *unit = row.goal.split()
    measured, target = (row.subject_median if unit else row.ratio), float(value)
    return {"≥": measured >= target, "≤": measured <= target, "<": measured < target,
            "=": round(measured, 2) == target}[op]


# ------------------------------------------------------------------------------------------ memory
def _status_kib(key: str) -> Optional[int]:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


class PeakRSS:
    """The growth of this process's resident memory over a ``with`` block, peak included (MiB).

    Linux keeps the peak itself (VmHWM), reset on entry through ``/proc/self/clear_refs``, so no
    sampling thread can miss a short spike. Elsewhere the process's lifetime peak (getrusage)
    stands in: a rough figure, as a child's starts at its parent's. Measure in a fresh process
    either way: one that already freed memory reuses it without growing.

    Example:
        >>> with PeakRSS() as peak:
        ...     block = bytearray(64 * 2**20)
        ...     block[::4096] = b"x" * len(block[::4096])
        >>> peak.growth_mib > 50
        True
    """

    def __enter__(self) -> "PeakRSS":
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._kernel_peak = True
        except OSError:
            self._kernel_peak = False
        self.start_mib = _rss_mib()
        self.growth_mib = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        peak = _status_kib("VmHWM") / 1024 if self._kernel_peak else _maxrss_mib()
        self.growth_mib = max(0.0, peak - self.start_mib)


def _rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else _maxrss_mib()


def _maxrss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


# -------------------------------------------------------------------------------- fresh processes
class Fresh:
    """Runs functions each in a new process forked from one server that has already imported the
    heavy libraries (``preload``): a fresh address space per call (what peak memory needs) without
    paying torch's import every time. Functions and arguments must pickle (module-level functions).
    What the child prints goes to ``log`` when given.

    The server starts on the first call and lives as long as this process; ``preload`` counts only
    for the first ``Fresh`` of a process.

    Example:
        >>> fresh = Fresh(preload=["json"])
        >>> fresh(os.getpid) != os.getpid()
        True
    """

    def __init__(self, preload: Sequence[str] = (), log: Optional[Path] = None) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(list(preload))
        self.log = log

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        receive, send = self.context.Pipe(duplex=False)
        child = self.context.Process(target=_child, args=(send, fn, args, self.log))
        child.start()
        send.close()
        try:
            ok, value = receive.recv()
        except EOFError:
            child.join()
            raise RuntimeError(f"{fn.__qualname__} died in its process (exit code {child.exitcode})") from None
        child.join()
        if not ok:
            raise RuntimeError(f"{fn.__qualname__} failed in its process:\n{value}")
        return value


def _child(send: Any, fn: Callable[..., Any], args: tuple, log: Optional[Path]) -> None:
    if log is not None:  # the libraries' bars and warnings go to the log, not between the results
        with open(log, "a") as file:
            os.dup2(file.fileno(), 1)
            os.dup2(file.fileno(), 2)
    try:
        send.send((True, fn(*args)))
    except BaseException:  # noqa: BLE001 - the parent re-raises it with the child's traceback
        send.send((False, traceback.format_exc()))


def quiet_environment() -> None:
    """No Hub, no telemetry, no tokenizer threads competing with the training threads (set before
    any library loads, so the processes forked later inherit it)."""
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                       ("HF_HUB_DISABLE_TELEMETRY", "1"), ("WANDB_DISABLED", "true"),
                       ("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")):
        os.environ.setdefault(key, value)


# ------------------------------------------------------------------------------------------- machine
def machine() -> dict:
    """What the figures were measured on: CPU, cores, avx512_bf16, load, library versions.

    Example:
        >>> info = machine()
        >>> info["cores"] >= 1 and {"cpu", "avx512_bf16", "torch", "trl"} <= set(info)
        True
    """
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    info = {
        "cpu": model.group(1).strip() if model else platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags.group(1).split() if flags else None,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "threads": os.environ.get("OMP_NUM_THREADS", "torch's default"),
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
    }
    for name in PACKAGES:
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = None
    return info


# --------------------------------------------------------------------------------------------- output
HEADERS = ["case", "measure", "subject", "baseline", "subject median", "baseline median", "ratio (range)", "goal"]


def _num(value: float, unit: str) -> str:
    if math.isnan(value):
        return "–"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def markdown_table(results: Sequence[CaseResult]) -> str:
    """The results as one Markdown table (the README's Performance section), a line per measure.

    Example:
        >>> row = Row("c", "speed", "new", "old", "tokens/s", 110.0, 100.0, 1.1, (1.05, 1.2), 3, True)
        >>> print(markdown_table([CaseResult("c", [row])]).splitlines()[2])
        | c | speed | new | old | 110 tokens/s | 100 tokens/s | **1.10×** (1.05–1.20) |  |
    """
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for result in results:
        if result.error:
            failure = result.error.splitlines()[-1][:120]
            lines.append(f"| {result.case} | failed: {failure} |" + " |" * (len(HEADERS) - 2))
        for r in result.rows:
            ratio = f"**{r.ratio:.2f}×** ({r.spread[0]:.2f}–{r.spread[1]:.2f})"
            goal = f"{r.goal} {'✓' if meets(r) else '✗'}" if r.goal else ""
            lines.append("| " + " | ".join([r.case, r.measure, r.subject, r.baseline, _num(r.subject_median, r.unit),
                                            _num(r.baseline_median, r.unit), ratio, goal]) + " |")
    return "\n".join(lines)


def markdown(results: Sequence[CaseResult], info: dict, *, quick: bool, seconds: float) -> str:
    """The whole results.md: the machine, the table, each case's settings and notes."""
    mode = "quick run: tiny sizes, to check that every case runs; its ratios mean little" if quick else "full run"
    libs = ", ".join(f"{name} {info[name]}" for name in PACKAGES if info.get(name))
    out = [f"# lora_nb benchmarks — {mode}", "",
           f"Machine: {info['cpu']}, {info['cores']} cores, avx512_bf16 {'yes' if info['avx512_bf16'] else 'no'}, "
           f"load average {info['load_average']} at the start, threads per process: {info['threads']}; "
           f"Python {info['python']}; {libs}. Suite time {seconds / 60:.1f} min.", "",
           "Each comparison ran its two sides alternately (A, B, A, B, …) in one run of the suite; the ratio is the "
           "median of the per-pair ratios subject ÷ baseline (range: the lowest and highest pair).", "",
           markdown_table(results), ""]
    for result in results:
        out += [f"## {result.case} ({result.seconds:.0f} s)", ""]
        out += [f"- {note}" for note in result.notes]
        if result.settings:
            out.append(f"- settings: `{json.dumps(result.settings, sort_keys=True)}`")
        if result.error:
            out += ["", "```", result.error.rstrip(), "```"]
        out.append("")
    return "\n".join(out)


def write(results: Sequence[CaseResult], info: dict, out: Path, *, quick: bool, seconds: float) -> str:
    """Write ``results.json`` and ``results.md`` into ``out``; return the Markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    data = {"machine": info, "quick": quick, "seconds": round(seconds, 1), "cases": [asdict(r) for r in results]}
    (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results, info, quick=quick, seconds=seconds))
    return markdown_table(results)

