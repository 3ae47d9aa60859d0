"""overhead: ``lora_nb.train`` against the same training written by hand with PEFT + TRL, short and long.

Both sides train the same model (loaded afresh for each run), the same adapter (lora_nb's
default, :data:`benchmarks.workloads.LORA`, initialised with the same seed) on the same rows
with the same SFTConfig values; the hand side is ``get_peft_model`` + ``SFTTrainer`` +
``save_model``, hand-tuned: lora_nb's speed settings (dtype, mixed precision, no gradient
checkpointing, length-grouped batches) are taken over, and it saves as TRL does by default (at
``save_steps=500`` and at the end). So the ratio is what lora_nb costs a user against writing it
by hand — its run folder, metrics file, checkpoints every 10% of the run (no closer than 30 s
apart), status file, chart, finiteness check and captured library output. Each side shows its
own default progress bar. Runs of 3, 20 and 200 steps: a tweak-and-rerun is short.

lora_nb's defaults change over time: the trainer settings of lora_nb's first run are read back,
and any the hand side does not match are taken over before its first run and named in the notes.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from ..common import CaseResult, Fresh, alternate, compare

SIZES = {True: dict(shape="tiny", rows=16, lengths={3: 3, 20: 3}, skip=1, max_length=128),
         False: dict(shape="small", rows=128, lengths={3: 5, 20: 5, 200: 3}, skip=2, max_length=256)}
# where files go, and how often the hand side saves (TRL's default): no difference to the training itself
NOT_COMPARED = {"output_dir", "logging_dir", "run_name", "save_steps", "save_strategy", "save_total_limit"}


def hand_config(size: dict, steps: int) -> dict:
    """The hand-written side's SFTConfig values and model dtype for a run of ``steps``: what
    lora_nb sets for ``train(steps=N)`` (see ``lora_nb.training.sft_settings.sft_config_kwargs`` and
    ``lora_nb.model.loading.device_kwargs``), written out, saving as TRL does by default."""
    return dict(max_steps=steps, learning_rate=2e-4, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                gradient_accumulation_steps=1, num_train_epochs=1, max_length=size["max_length"], packing=False,
                lr_scheduler_type="cosine", warmup_steps=0.03, logging_steps=1, seed=42, report_to="none",
                bf16=False, fp16=False, dataloader_pin_memory=False, gradient_checkpointing=True, dtype="float32")


def run(quick: bool, fresh: Fresh) -> CaseResult:
    return fresh(measure, SIZES[quick])


def measure(size: dict) -> CaseResult:
    """Alternate the two sides in this process, for each run length; the rows of the comparison."""
    from transformers import AutoTokenizer

    from ..workloads import LORA, instruction_rows, lengths, model_folder, train_with_lora_nb, train_with_trl

    folder = model_folder(size["shape"])
    tok = AutoTokenizer.from_pretrained(folder)
    rows = instruction_rows(tok, size["rows"])
    notes, rows_out, configs = [], [], {}
    kw = dict(subject="lora_nb.train", baseline="PEFT + TRL by hand")
    with tempfile.TemporaryDirectory() as tmp:
        runs = itertools.count()
        for steps, pairs in size["lengths"].items():
            config = configs[steps] = hand_config(size, steps)

            def with_lora_nb() -> dict:
                metrics, args = train_with_lora_nb(folder, rows, Path(tmp) / f"lora_nb-{next(runs)}", size["skip"],
                                                   steps=steps, max_length=size["max_length"])
                if not notes:
                    notes.extend(adopt(args, config))
                else:
                    adopt(args, config)
                return metrics

            def by_hand() -> dict:
                return train_with_trl(folder, rows, Path(tmp) / f"hand-{next(runs)}", size["skip"], config)[0]

            results = alternate(with_lora_nb, by_hand, pairs)
            rows_out += [
                compare("overhead", f"{steps} steps: training speed (steady steps)", "tokens_per_s", results,
                        unit="tokens/s", higher_is_better=True, goal="≥ 1.00", **kw),
                compare("overhead", f"{steps} steps: speed over the whole train() call, CPU time",
                        "call_tokens_per_cpu_s", results, unit="tokens/CPU-s", higher_is_better=True, goal="≥ 1.00",
                        **kw),
                compare("overhead", f"{steps} steps: loss per token (same run)", "loss_per_token", results, unit="",
                        higher_is_better=False, goal="= 1.00", **kw),
            ]
    return CaseResult("overhead", rows_out, settings={**size, "lora": LORA, "hand": configs,
                                                      "data": lengths(tok, rows)},
                      notes=notes + [f"speed: real (non-padding) tokens per second over the steps after the first "
                                     f"{size['skip']}; whole call: real tokens trained ÷ the CPU time of the call, "
                                     "from the call to the saved adapter (trainer setup, data preparation, every "
                                     "save), the CPU-time basis so that other work on the machine does not count."])


def adopt(settings: dict, config: dict) -> list[str]:
    """Take over into ``config`` the settings lora_nb ran with (its trainer's and its model's
    dtype) that the hand side lacks; return a note saying which, or that none differed."""
    from trl import SFTConfig

    sft = {k: v for k, v in config.items() if k != "dtype"}
    hand = {**SFTConfig(output_dir="hand", **sft).to_dict(), "dtype": config["dtype"]}
    differ = {k: v for k, v in settings.items() if k not in NOT_COMPARED and hand.get(k) != v}
    config.update(differ)
    if not differ:
        return ["matched: the hand side's SFTConfig and model dtype equal lora_nb's (paths aside)."]
    return [f"matched: the hand side took over lora_nb's {', '.join(f'{k}={v!r}' for k, v in sorted(differ.items()))} "
            f"(it had {', '.join(f'{k}={hand.get(k)!r}' for k in sorted(differ))})."]
