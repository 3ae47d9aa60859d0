"""data_scale: what large data costs before the first step — ``lora_nb.data.prepare`` (read,
check, convert) and ``lora_nb.train(steps=1)`` up to its first step (prepare again, TRL's
tokenisation of every row, the sampler) — as the data grows.

- 100,000 short alpaca rows in a jsonl file, against 1,000 of the same rows (``--quick``: 10,000).
- one row whose text is 10 MB, against one of 1 KB (``--quick``: 1 MB). ``prepare`` is given
  ``max_length=64`` (what training keeps, :func:`lora_nb.data.prepare.kept_tokens`), so the text is cut
  before it is tokenised; ``train`` cuts it once it passes the same to ``prepare``.

Each run is a fresh process with an empty datasets cache (nothing found from an earlier run),
on the embedded demo model. The medians are the figures; the ratio is how the time grows with
the data (100× the rows, 10,000× the text).

``python -m benchmarks.cases.data_scale [--quick]`` runs this case alone and prints its table.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ..common import CaseResult, Fresh, alternate, compare

SIZES = {True: dict(rows=10_000, small_rows=1_000, text=2**20, pairs=1),
         False: dict(rows=100_000, small_rows=1_000, text=10 * 2**20, pairs=3)}
MAX_LENGTH = 64
LINE = '{{"instruction": "Tell me whether the number is even or odd.", "input": "{0}", "output": "{1}"}}\n'


def run(quick: bool, fresh: Fresh) -> CaseResult:
    size = SIZES[quick]
    folder = Path(tempfile.mkdtemp(prefix="lora_nb-data-scale-"))
    many, few = folder / "many.jsonl", folder / "few.jsonl"
    for path, rows in ((many, size["rows"]), (few, size["small_rows"])):
        with open(path, "w") as f:
            f.writelines(LINE.format(i, "odd" if i % 2 else "even") for i in range(rows))
    long, short = folder / "long.jsonl", folder / "short.jsonl"
    words = "the quick brown fox jumps over 12 lazy dogs. "
    for path, chars in ((long, size["text"]), (short, 1024)):
        path.write_text(json.dumps({"text": (words * (chars // len(words) + 1))[:chars]}) + "\n")
    rows = []
    for measure, subject, baseline in [
        ("alpaca rows", (many, f"{size['rows']:,} rows"), (few, f"{size['small_rows']:,} rows")),
        ("one long text", (long, f"{size['text'] // 2**20} MB"), (short, "1 KB")),
    ]:
        runs = alternate(lambda: fresh(measure_data, str(subject[0])), lambda: fresh(measure_data, str(baseline[0])),
                         size["pairs"])
        for key, what in (("prepare", "prepare"), ("first_step", "train to first step")):
            rows.append(compare("data_scale", f"{measure}: {what}", key, runs, subject=subject[1], baseline=baseline[1],
                                unit="s", higher_is_better=False))
    return CaseResult("data_scale", rows, settings={**size, "max_length": MAX_LENGTH, "model": "embedded demo"},
                      notes=["each run a fresh process with an empty datasets cache; train(steps=1, batch_size=4, "
                             f"max_length={MAX_LENGTH}) timed from the call to its first step"])


def measure_data(path: str) -> dict:
    """In a fresh process with an empty datasets cache: seconds of ``prepare(path)``, then of
    ``train(path, steps=1)`` up to its first step."""
    import datasets
    from transformers import TrainerCallback

    import lora_nb
    from lora_nb.data.prepare import kept_tokens, prepare
    from lora_nb.recipe.schema import TrainSection
    from lora_nb.demo.tiny import tiny_model

    folder = Path(tempfile.mkdtemp(prefix="lora_nb-data-scale-run-"))
    datasets.config.HF_DATASETS_CACHE = str(folder / "datasets")  # nothing of an earlier run is found
    model, tokenizer = lora_nb.load(str(tiny_model("llama", "demo")))
    model = lora_nb.inject(model, r=8, verbose=False)

    start = time.perf_counter()
    prepare(path, tokenizer, max_length=kept_tokens(TrainSection(max_length=MAX_LENGTH)))
    prepared = time.perf_counter() - start

    class FirstStep(TrainerCallback):
        at = None

        def on_step_begin(self, args, state, control, **kwargs):
            FirstStep.at = FirstStep.at or time.perf_counter()

    start = time.perf_counter()
    lora_nb.train(model, tokenizer, path, steps=1, batch_size=4, max_length=MAX_LENGTH, output_dir=str(folder / "run"),
                  callbacks=[FirstStep()], progress=False)
    return {"prepare": prepared, "first_step": FirstStep.at - start}


if __name__ == "__main__":
    import argparse

    from ..common import markdown_table, quiet_environment

    parser = argparse.ArgumentParser(prog="python -m benchmarks.cases.data_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 rows and a 1 MB text, one pair")
    quick = parser.parse_args().quick
    quiet_environment()
    log = Path(tempfile.gettempdir()) / "lora_nb-bench.log"
    result = run(quick, Fresh(["lora_nb", "torch", "transformers", "datasets", "trl.trainer.sft_trainer"], log))
    print(markdown_table([result]))
    print(f"\nthe libraries' output in {log}")
