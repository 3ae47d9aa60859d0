"""defaults: what a user gets from ``lora_nb.train(model, tok, data, steps=N)`` against TRL's defaults.

The lora_nb side sets nothing but the steps (and where the run goes). The TRL side is
``SFTConfig(output_dir, max_steps, learning_rate, per_device_train_batch_size)`` and nothing
else, except ``use_cpu=True`` on a machine without a GPU: TRL turns bf16 on by default and its
own error asks for that setting there. Both train lora_nb's default adapter with the same seed
on the same mixed-length instruction rows (16–512 tokens), with the same learning rate and batch
size, for one epoch. The full run uses a SmolLM2-135M-shaped model with random weights, so
a step costs what it would on the real model.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from ..common import CaseResult, Fresh, alternate, compare

# one epoch on both sides (rows = steps x batch 4), measured from its first step: lora_nb groups
# batches by length, so only a whole epoch has both sides train on the same examples
SIZES = {True: dict(shape="tiny", rows=16, steps=4, skip=0, pairs=3),
         False: dict(shape="smollm2-135m", rows=32, steps=8, skip=0, pairs=3)}


def run(quick: bool, fresh: Fresh) -> CaseResult:
    return fresh(measure, SIZES[quick])


def trl_defaults(steps: int) -> dict:
    """SFTConfig keywords a TRL user would write: the steps, learning rate and batch size, plus
    ``use_cpu`` where there is no GPU (without it TRL's default bf16 is refused there)."""
    import torch

    from lora_nb.recipe.schema import TrainSection

    # lora_nb's learning rate and batch size, given to TRL too: what is compared is everything else
    config = dict(max_steps=steps, learning_rate=TrainSection.lr, per_device_train_batch_size=TrainSection.batch_size)
    if not torch.cuda.is_available():
        config["use_cpu"] = True
    return config


def measure(size: dict) -> CaseResult:
    """Alternate the two sides in this process; the rows of the comparison."""
    from transformers import AutoTokenizer

    from lora_nb.hf.devices import auto_dtype

    from ..flops import matmul_peak
    from ..workloads import LORA, instruction_rows, lengths, model_folder, train_with_lora_nb, train_with_trl

    folder = model_folder(size["shape"])
    tok = AutoTokenizer.from_pretrained(folder)
    rows = instruction_rows(tok, size["rows"])
    config, seen = trl_defaults(size["steps"]), {}
    peak = matmul_peak()
    peak_dtype = str(auto_dtype()).removeprefix("torch.")

    def with_mfu(metrics: dict) -> dict:
        return {**metrics, "mfu": 100 * metrics["flops_per_cpu_s"] / peak}
    with tempfile.TemporaryDirectory() as tmp:
        runs = itertools.count()

        def with_lora_nb() -> dict:
            metrics, seen["lora_nb"] = train_with_lora_nb(folder, rows, Path(tmp) / f"lora_nb-{next(runs)}",
                                                          size["skip"], steps=size["steps"])
            return with_mfu(metrics)

        def with_trl() -> dict:
            metrics, seen["trl"] = train_with_trl(folder, rows, Path(tmp) / f"trl-{next(runs)}", size["skip"], config)
            return with_mfu(metrics)

        results = alternate(with_lora_nb, with_trl, size["pairs"])
    kw = dict(subject="lora_nb defaults", baseline="TRL defaults")
    return CaseResult("defaults", [
        compare("defaults", "training speed (one epoch)", "tokens_per_s", results, unit="tokens/s",
                higher_is_better=True, goal="≥ 2.00", **kw),
        compare("defaults", "training speed (one epoch), CPU time", "tokens_per_cpu_s", results,
                unit="tokens/CPU-s", higher_is_better=True, goal="≥ 2.00", **kw),
        compare("defaults", "MFU: model FLOPs ÷ matmul peak, CPU time", "mfu", results, unit="%",
                higher_is_better=True, goal="≥ 20 %", **kw),
        compare("defaults", "whole train() call", "train_s", results, unit="s", higher_is_better=False, **kw),
        compare("defaults", "loss per token (same examples)", "loss_per_token", results, unit="",
                higher_is_better=False, **kw),
    ], settings={**size, "lora": LORA, "trl": config, "data": lengths(tok, rows)},
        notes=[f"lora_nb trained with {describe(seen['lora_nb'])}.", f"TRL trained with {describe(seen['trl'])}.",
               "lora_nb's save_steps is its 10% cadence; its callback keeps those saves at least 30 s apart "
               "(plus the last step).",
               "speed: real (non-padding) tokens per second over the whole epoch, from its first step (both sides "
               "see the same examples, in their own order); loss: summed over every label token of the run, "
               "per token.",
               f"MFU: model FLOPs (benchmarks/flops.py: 4 per frozen weight and 6 per adapter weight per token, "
               f"causal attention; recomputation, padding and unlabelled positions not counted) per CPU-second "
               f"of the epoch, over the measured matmul peak: {peak / 1e9:,.0f} GFLOP per CPU-second "
               f"({peak_dtype}, 2048×2048, torch's threads)."])


def describe(settings: dict) -> str:
    """The settings that decide a step's cost, as one phrase."""
    keys = ("dtype", "bf16", "fp16", "gradient_checkpointing", "train_sampling_strategy", "padding_free", "packing",
            "max_length", "save_steps", "logging_steps")
    return ", ".join(f"{k}={settings.get(k)!r}" for k in keys)
