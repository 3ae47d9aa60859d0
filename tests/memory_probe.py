"""Peak memory of real training steps, for tests/test_memory.py: run as a fresh process.

    python tests/memory_probe.py MODEL_DIR BATCH LENGTH CHECKPOINTING(0|1) [QUANT]

Prints one JSON line: the resident memory (RSS) after the imports, and its peak while loading,
injecting and training two steps of full-length examples (sampled every 5 ms), in bytes.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import threading
import time


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    folder, batch, length, checkpointing = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    quant = sys.argv[5] if len(sys.argv) > 5 else None
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
    model, tokenizer = lora_nb.load(folder, quant=quant)
    model = lora_nb.inject(model, r=16)
    random.seed(0)
    words = ["alpha", "beta", "gamma", "delta", "one", "two", "three", "red", "blue", "the", "a", "of"]
    rows = [{"text": " ".join(random.choice(words) for _ in range(length * 2))} for _ in range(batch * 2)]
    with tempfile.TemporaryDirectory() as out:
        lora_nb.train(model, tokenizer, rows, steps=2, batch_size=batch, max_length=length, warmup=0,
                      gradient_checkpointing=checkpointing, output_dir=os.path.join(out, "run"), progress=False)
    done.set()
    print(json.dumps({"base": base, "peak": peak[0]}))


if __name__ == "__main__":
    main()
