"""merge_generate: what merging an adapter costs and what it buys at generation time.

- Generation: the merged model against the same adapter unmerged (a PeftModel), greedy, the
  same prompts and the same number of new tokens, alternating in one process.
- Writing: ``lora_nb.merge(model, out)`` against ``save_pretrained`` of the plain base (the floor
  of writing a standalone model of that size), each in a fresh process: time and peak memory
  growth. lora_nb's merge builds one full-precision copy of the model, so its memory should read
  as about one model size more than the floor.

The adapter is lora_nb's default with its B matrices drawn at random (a fresh adapter's are
zero, which would make the merge a no-op), so the merged model must answer as the adapter does.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..common import CaseResult, Fresh, PeakRSS, alternate, compare

SIZES = {True: dict(shape="tiny", new_tokens=8, pairs=3), False: dict(shape="llama-100m", new_tokens=32, pairs=3)}
PROMPTS = ["Explain LoRA in one sentence.", "Write a short poem about the sea.", "What is the capital of France?",
           "Is the number 7 even or odd?"]


def run(quick: bool, fresh: Fresh) -> CaseResult:
    size = SIZES[quick]
    generation, notes = fresh(generate, size)
    writing = alternate(lambda: fresh(write, size, "merge"), lambda: fresh(write, size, "save"), size["pairs"])
    kw = dict(subject="lora_nb.merge", baseline="save_pretrained (base)", higher_is_better=False)
    return CaseResult("merge_generate", [
        compare("merge_generate", "generation speed", "tokens_per_s", generation, subject="merged model",
                baseline="adapter unmerged", unit="tokens/s", higher_is_better=True),
        compare("merge_generate", "writing a standalone model: time", "s", writing, unit="s", **kw),
        compare("merge_generate", "writing a standalone model: memory", "mib", writing, unit="MiB", **kw),
    ], settings={**size, "prompts": len(PROMPTS)}, notes=notes)


def adapted(shape: str):
    """The model of ``shape`` wearing lora_nb's default adapter with random B matrices; and its tokenizer."""
    import torch

    import lora_nb

    from ..workloads import model_folder

    model, tok = lora_nb.load(str(model_folder(shape)))
    model = lora_nb.inject(model, verbose=False)
    torch.manual_seed(0)
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.02)
    return model, tok


def generate(size: dict) -> tuple[tuple[list, list], list[str]]:
    """Alternate generating with the merged and the unmerged model; their metrics, and notes."""
    import lora_nb

    model, tok = adapted(size["shape"])
    n = size["new_tokens"]

    def speed(m) -> dict:
        start = time.perf_counter()
        lora_nb.generate(m, tok, PROMPTS, max_new_tokens=n, min_new_tokens=n)
        return {"tokens_per_s": len(PROMPTS) * n / (time.perf_counter() - start)}

    with tempfile.TemporaryDirectory() as tmp:
        merged, _ = lora_nb.load(str(lora_nb.merge(model, Path(tmp) / "merged", tokenizer=tok)))
        results = alternate(lambda: speed(merged), lambda: speed(model), size["pairs"])
        answers = [lora_nb.generate(m, tok, PROMPTS, max_new_tokens=n) for m in (merged, model)]
        same = answers[0] == answers[1]
    params = sum(p.numel() for p in merged.parameters())
    return results, [f"model: {params / 1e6:.3g}M parameters, {params * 4 / 2**20:,.3g} MiB in fp32; "
                     f"{len(PROMPTS)} prompts as one batch, {n} new tokens each.",
                     f"the merged model's greedy answers are {'the same as' if same else 'NOT the same as'} the "
                     "unmerged adapter's."]


def write(size: dict, what: str) -> dict:
    """In a fresh process: merge the adapted model to a folder, or save the plain base; time and memory growth."""
    import lora_nb

    from ..workloads import model_folder

    if what == "merge":
        model, tok = adapted(size["shape"])
    else:
        model, tok = lora_nb.load(str(model_folder(size["shape"])))
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as peak:
        out = Path(tmp) / "out"
        start = time.perf_counter()
        if what == "merge":
            lora_nb.merge(model, out, tokenizer=tok)
        else:
            model.save_pretrained(out)
            tok.save_pretrained(out)
        seconds = time.perf_counter() - start
    return {"s": seconds, "mib": peak.growth_mib}
