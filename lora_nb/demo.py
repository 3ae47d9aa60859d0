"""The demo: the whole workflow, offline, on two CPU cores in about half a minute.

It builds (once, cached) a small Llama-family model with its own tokenizer and a synthetic
instruction task with a held-out split, then: discovers targets, injects QLoRA (4-bit) where
bitsandbytes runs (else LoRA), trains with a progress bar, measures held-out exact-match accuracy
before and after, merges, generates from the merged model, writes the loss chart and the exported
script, and says where everything is. Given ``model=`` a Hub name it runs the same steps on it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from . import demo_data
from .files import check_free


def quant_available() -> Optional[str]:
    """"4bit" when bitsandbytes can run a 4-bit layer here (GPU, or CPU with bitsandbytes >= 0.49), else None."""
    try:
        import bitsandbytes as bnb
        import torch

        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        layer = layer.to(device)
        layer(torch.randn(2, 64, device=device))
        return "4bit"
    except Exception:  # no bitsandbytes, or no kernel for this device
        return None


def accuracy(model: Any, tokenizer: Any, rows: list[dict], batch: int = 50) -> float:
    """Exact-match accuracy of greedy answers on alpaca ``rows``.

    Example:
        >>> accuracy(model, tok, test_rows)   # doctest: +SKIP
        0.98
    """
    from .generation import generate
    from .portable import alpaca_user_text

    hits = 0
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        answers = generate(model, tokenizer, [alpaca_user_text(r) for r in chunk], max_new_tokens=6)
        hits += sum(a.strip() == r["output"] for a, r in zip(answers, chunk))
    return hits / len(rows)


def write_data(folder: Path, train_rows: int = 2000, test_rows: int = 100) -> tuple[Path, Path]:
    """The task's train and held-out rows as jsonl files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = demo_data.split(train_rows, test_rows)
    paths = folder / "train.jsonl", folder / "test.jsonl"
    for path, rows in zip(paths, (train, test)):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def run_demo(out: str | Path = "lora_nb_demo", model: Optional[str] = None, steps: Optional[int] = None,
             quant: Optional[str] = "auto", overwrite: bool = False) -> dict:
    """Run the demo and return its figures: accuracy before/after, merged accuracy, seconds, paths.

    ``out`` must be new or empty; ``overwrite=True`` (``lora-nb demo --force``) writes the demo's
    files over an earlier demo's there.

    Example:
        >>> figures = run_demo("demo-out")        # doctest: +SKIP
        >>> figures["accuracy_after"] > figures["accuracy_before"]   # doctest: +SKIP
        True
    """
    out = check_free(out, "out", overwrite=overwrite, option="--force (overwrite=True)")  # before any slow import
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .discovery import discover
    from .generation import generate
    from .injection import inject
    from .loading import load
    from .merging import merge
    from .pipeline import to_script
    from .tiny import tiny_model
    from .training import train

    start = time.time()
    embedded = model is None
    name = str(tiny_model("llama", "demo")) if embedded else model
    train_path, test_path = write_data(out / "data")
    test_rows = [json.loads(line) for line in test_path.read_text().splitlines()]
    quant = quant_available() if quant == "auto" else quant
    print(f"model: {name}\ntask: say whether a number is even or odd ({train_path}, held out: {test_path})")

    print("\n== 1. Targets (from the config alone, meta device)")
    print(discover(name, r=16))

    print(f"\n== 2. Load ({quant or 'full precision'}) and measure the base model")
    base, tok = load(name, quant=quant)
    before = accuracy(base, tok, test_rows)
    print(f"accuracy before: {before:.2f}")

    print("\n== 3. Inject LoRA and train")
    lora_model = inject(base, r=16, alpha=32, dropout=0.0, targets="all-linear")
    run = train(lora_model, tok, str(train_path), steps=steps or (200 if embedded else 100),
                lr=2e-3 if embedded else 2e-4, batch_size=16, max_length=64, eval=str(test_path),
                eval_steps=50, output_dir=str(out / "run"), overwrite=overwrite)
    after = accuracy(lora_model, tok, test_rows)
    print(f"accuracy after: {after:.2f}")
    print(run)

    print("\n== 4. Merge and generate from the merged model")
    merged_dir = merge(lora_model, out / "merged", tokenizer=tok, overwrite=overwrite)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    merged_tok = AutoTokenizer.from_pretrained(merged_dir)
    merged_acc = accuracy(merged, merged_tok, test_rows)
    for row in test_rows[:3]:
        prompt = f"{row['instruction']}\n\n{row['input']}"
        print(f"  {prompt!r} -> {generate(merged, merged_tok, prompt, max_new_tokens=6)!r}")
    print(f"merged model accuracy: {merged_acc:.2f}")

    chart = out / "loss.png"
    chart.write_bytes((run.dir / "loss.png").read_bytes())
    script = out / "train_lora.py"
    script.write_text(to_script(run.recipe))  # it trains into run-script/, beside the demo's run
    seconds = time.time() - start
    figures = {"accuracy_before": before, "accuracy_after": after, "merged_accuracy": merged_acc,
               "quant": quant, "steps": run.step, "seconds": round(seconds, 1), "run": str(run.dir),
               "adapter": str(run.adapter_dir), "merged": str(merged_dir), "chart": str(chart), "script": str(script)}
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(f"\n== Done in {seconds:.0f} s")
    print(f"accuracy before: {before:.2f}\naccuracy after: {after:.2f}")
    for key in ("run", "adapter", "merged", "chart", "script"):
        print(f"  {key:8} {figures[key]}")
    print(f"  recipe   {run.dir / 'recipe.yaml'}  (lora-nb run / lora-nb export)")
    return figures
