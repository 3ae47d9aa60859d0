"""The quickstart on a base that speaks, on a GPU: SmolLM2-135M-Instruct (lora_nb.demo.pretrained_base),
QLoRA 4-bit, the demo's even/odd task — held-out exact-match accuracy before and after, train time,
peak memory, and what compare shows for the quickstart's prompt. One JSON line per configuration.

    python benchmarks/smollm2_gpu.py [--out DIR]    # needs pretrained_base() to find the model
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import lora_nb
from lora_nb.demo import pretrained_base, write_data

CONFIGS = [(150, 1e-3), (150, 2e-3), (300, 1e-3)]  # (steps, lr): the quickstart's, then two longer looks
PROMPTS = ["Tell me whether the number is even or odd.\n\n40817", "What is the capital of France?"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks")
    parser.add_argument("--budget-s", type=float, default=300)
    parser.add_argument("--smoke", action="store_true", help="2 steps, on whatever device there is")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    started = time.time()
    t = time.time()
    base = pretrained_base()
    print(f"base: {base} ({time.time() - t:.1f} s to find/convert)", flush=True)
    train_path, test_path = write_data(Path("/tmp/smol_quickstart"))
    results = []
    for steps, lr in [(2, 1e-3)] if args.smoke else CONFIGS:
        if time.time() - started > args.budget_s:
            print(f"skipped steps={steps} lr={lr}: time budget", flush=True)
            continue
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.time()
        model, tok = lora_nb.load(base, quant="4bit")
        load_s = time.time() - t
        model = lora_nb.inject(model, r=16, alpha=32, dropout=0.0, targets="all-linear", verbose=False)
        before = lora_nb.evaluate(model, tok, test_path, progress=False)
        t = time.time()
        run = lora_nb.train(model, tok, train_path, eval=str(test_path), steps=steps, lr=lr, batch_size=16,
                            max_length=64, eval_steps=50,
                            output_dir=f"/tmp/smol_runs/{time.time():.0f}-s{steps}-lr{lr}", progress=False)
        train_s = time.time() - t
        after = lora_nb.evaluate(model, tok, test_path, progress=False)
        shown = lora_nb.compare(model, tok, PROMPTS, max_new_tokens=16)
        row = {"steps": steps, "lr": lr, "quant": "4bit", "r": 16, "batch_size": 16, "max_length": 64,
               "load_s": round(load_s, 1), "train_s": round(train_s, 1), "s_per_step": round(train_s / steps, 3),
               "accuracy_before": before.score, "accuracy_after": after.score, "final_loss": run.last("loss"),
               "eval_loss": run.last("eval_loss"),
               "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
               "compare": shown.rows, "worst_after": [r[:3] for r in after.worst(3)]}
        print(json.dumps(row), flush=True)
        results.append(row)
        del model
        if cuda:
            torch.cuda.empty_cache()
    Path(args.out, "smollm2_gpu.json").write_text(json.dumps(
        {"gpu": torch.cuda.get_device_name() if cuda else "cpu", "base": base, "results": results}, indent=1))


if __name__ == "__main__":
    main()
