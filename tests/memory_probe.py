"""Peak memory of real training steps, for tests/test_memory.py: run as a fresh process.

    python tests/memory_probe.py MODEL_DIR BATCH LENGTH CHECKPOINTING(0|1) [--quant 4bit] [--dtype fp32]
                                 [--data ROWS.jsonl] [--steps 2]

Prints one JSON line: the resident memory (RSS) after the imports, and its peak while loading,
injecting and training ``--steps`` steps, in bytes: the kernel's own peak mark (VmHWM), reset at the
baseline, so no short spike is missed and no sampling thread runs beside training. Without ``--data`` the
examples are full length (random words, cut at LENGTH tokens); with it, the rows of that file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile


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
    import importlib.util

    import lora_nb

    # the libraries the run imports, before the baseline: the estimate counts training, not code. TRL's
    # model card imports trackio where it is installed (30-40 MiB with gradio_client and uvicorn on some stacks)
    for module in ("datasets", "peft", "bitsandbytes", "trl.trainer.sft_trainer", "matplotlib.backends.backend_agg",
                   "transformers.models.llama.modeling_llama", "transformers.utils.notebook", "trackio"):
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            importlib.import_module(module)

    base = rss()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak mark to the current RSS (Linux 4.0+)
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
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"base": base, "peak": peak}))


if __name__ == "__main__":
    main()
