"""Peak memory of real training steps, for tests/test_memory.py: run as a fresh process.

    python tests/memory_probe.py MODEL_DIR BATCH LENGTH CHECKPOINTING(0|1) [--quant 4bit] [--dtype fp32]
                                 [--data ROWS.jsonl] [--steps 2]

Prints one JSON line: the resident memory (RSS) after the imports, and its peak while loading,
injecting and training ``--steps`` steps (sampled every 5 ms), in bytes. Without ``--data`` the
examples are full length (random words, cut at LENGTH tokens); with it, the rows of that file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser()
    for name, kind in (("folder", str), ("batch", int), ("length", int), ("checkpointing", int)):
        parser.add_argument(name, type=kind)
    parser.add_argument("--quant")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    import importlib

    import lora_nb

    # the libraries the run imports, before the baseline: the estimate counts training, not code
    for module in ("datasets", "peft", "bitsandbytes", "trl.trainer.sft_trainer", "matplotlib.backends.backend_agg",
                   "transformers.models.llama.modeling_llama"):
        importlib.import_module(module)

    base = rss()
    peak, done = [base], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    model, tokenizer = lora_nb.load(args.folder, quant=args.quant, dtype=args.dtype)
    model = lora_nb.inject(model, r=16)
    if args.data:
        rows = args.data
    else:
        random.seed(0)
        words = ["alpha", "beta", "gamma", "delta", "one", "two", "three", "red", "blue", "the", "a", "of"]
        rows = [{"text": " ".join(random.choice(words) for _ in range(args.length * 2))}
                for _ in range(args.batch * args.steps)]
    with tempfile.TemporaryDirectory() as out:
        lora_nb.train(model, tokenizer, rows, steps=args.steps, batch_size=args.batch, max_length=args.length,
                      warmup=0, gradient_checkpointing=bool(args.checkpointing), output_dir=os.path.join(out, "run"),
                      progress=False)
    done.set()
    print(json.dumps({"base": base, "peak": peak[0]}))


if __name__ == "__main__":
    main()
