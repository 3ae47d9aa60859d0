"""``python -m benchmarks [--quick] [--cases a,b] [--out DIR]``: run the cases, write the results, print the table."""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Optional, Sequence

from .cases import CASES
from .common import CaseResult, Fresh, machine, quiet_environment, write

# What the measuring processes import once, in the server they are forked from (lora_nb first:
# it silences a bitsandbytes import-time note).
PRELOAD = ["lora_nb", "torch", "transformers", "peft", "bitsandbytes", "datasets", "trl.trainer.sft_trainer",
           "matplotlib.backends.backend_agg", "benchmarks.workloads"]


def cases(text: str) -> list[str]:
    """The case names in ``--cases``, checked: a typo gets the nearest name."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in [n for n in names if n not in CASES] or ([] if names else [text]):
        near = difflib.get_close_matches(name, CASES, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise argparse.ArgumentTypeError(f"unknown case {name!r}{hint}; cases: {', '.join(CASES)}")
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Run lora_nb's benchmark cases, write "
                                     "results.md and results.json, print the table.")
    parser.add_argument("--quick", action="store_true", help="every case at tiny sizes, 3 pairs (a few minutes)")
    parser.add_argument("--cases", type=cases, default=list(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="folder for results.md/.json")
    args = parser.parse_args(argv)
    quiet_environment()
    if args.quick:  # tiny steps on a loaded machine: two threads spend more time waiting on each other than computing
        os.environ["OMP_NUM_THREADS"] = "1"
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    log = Path(tempfile.gettempdir()) / "lora_nb-bench.log"
    log.write_text("")
    info, fresh, results, start = machine(), Fresh(PRELOAD, log), [], time.perf_counter()
    for name in args.cases:
        print(f"[{time.perf_counter() - start:5.0f} s] {name}", flush=True)
        began = time.perf_counter()
        try:
            result = importlib.import_module(f"{__package__}.cases.{name}").run(args.quick, fresh)
        except Exception:  # noqa: BLE001 - one failed case is reported in the table; the others still run
            result = CaseResult(name, [], error=traceback.format_exc())
        result.seconds = time.perf_counter() - began
        results.append(result)
        # written after every case: an interrupted suite still leaves what it measured
        table = write(results, info, args.out, quick=args.quick, seconds=time.perf_counter() - start)
    print(table)
    print(f"\n{time.perf_counter() - start:.0f} s; results in {args.out / 'results.md'} and results.json; "
          f"the libraries' output in {log}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
