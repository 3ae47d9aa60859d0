"""qlora_vs_lora: QLoRA (``load(quant="4bit")``: NF4 weights, double quantisation) against LoRA
on the model as ``load()`` gives it (dtype auto: bf16 on a CPU with bf16 instructions, else fp32),
on this machine's CPU: step time and peak memory.

Each run is a fresh process (forked from one that only imported the libraries), so its peak
resident memory — loading and training together, over what the process held at its start — is
its own; QLoRA and LoRA runs alternate. Both train lora_nb's defaults on the same rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

from ..common import CaseResult, Fresh, PeakRSS, alternate, compare

SIZES = {True: dict(shape="tiny", rows=16, steps=3, skip=1, max_length=128, pairs=3),
         False: dict(shape="smollm2-135m", rows=32, steps=3, skip=1, max_length=256, pairs=3)}


def run(quick: bool, fresh: Fresh) -> CaseResult:
    size = SIZES[quick]
    results = alternate(lambda: fresh(one_run, size, "4bit"), lambda: fresh(one_run, size, None), size["pairs"])
    from lora_nb.hf.devices import cpu_computes_bf16

    kw = dict(subject="QLoRA (4-bit)", baseline=f"LoRA ({'bf16' if cpu_computes_bf16() else 'fp32'} base)")
    return CaseResult("qlora_vs_lora", [
        compare("qlora_vs_lora", "time per step (steady steps)", "step_s", results, unit="s", higher_is_better=False,
                **kw),
        compare("qlora_vs_lora", "peak memory (RSS growth, load + train)", "peak_mib", results, unit="MiB",
                higher_is_better=False, **kw),
        compare("qlora_vs_lora", "loss per token (same steps)", "loss_per_token", results, unit="",
                higher_is_better=False, **kw),
    ], settings=size, notes=[f"time per step: over the steps after the first {size['skip']}; memory: the peak "
                             "resident memory of the run's own process over what it held once the libraries were "
                             "imported (the kernel's peak, VmHWM, where the OS has it)."])


def one_run(size: dict, quant: Optional[str]) -> dict:
    """One training run of ``size`` in this (fresh) process; its metrics and its peak memory growth."""
    from transformers import AutoTokenizer

    from ..workloads import instruction_rows, model_folder, train_with_lora_nb

    folder = model_folder(size["shape"])
    rows = instruction_rows(AutoTokenizer.from_pretrained(folder), size["rows"])
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as peak:
        metrics, _ = train_with_lora_nb(folder, rows, Path(tmp) / "run", size["skip"], quant=quant,
                                        steps=size["steps"], max_length=size["max_length"])
    return {**metrics, "peak_mib": peak.growth_mib}
