# The template of every script lora_nb.export.script renders (these comment lines are left out). It is
# valid Python that linters check, and lora_nb never runs it. Rendering keeps its docstring, main() and
# the other functions below as written, and changes only this: the settings block gets the recipe's
# values as NAME = <literal> lines; each `if`, `x if test else y` and `and`/`or` whose test reads settings
# alone becomes what the recipe makes of it (lora_nb.export.assemble.prune); the `from lora_nb.hf...`
# imports give way to the code of the helpers the remaining code calls, copied from lora_nb.hf below it.
# So a test on a setting here is a choice of what the script carries: keep such tests on settings alone.
# tests/test_portable.py checks that a rendered script defines every name it uses.
"""LoRA fine-tuning exported by lora_nb {version}: the recipe's settings are the constants below.

Needs torch, transformers, peft, trl and datasets, not lora_nb; never writes into a folder holding files unless
--overwrite is given. Launched as N processes, each takes batch_size examples a step and prints one "process i
of N" line; only the main one writes files.

    python train_lora.py [--output-dir NEW]   # a new run in OUTPUT_DIR (or NEW)
    python train_lora.py --resume RUN_DIR     # continue RUN_DIR from its last complete checkpoint
    accelerate launch [--config_file accelerate_config.yaml] train_lora.py [...]   # multi-GPU / multi-node
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from typing import TYPE_CHECKING

import torch
from accelerate import PartialState
from peft import LoraConfig, get_peft_model
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from lora_nb.hf.columns import map_columns
from lora_nb.hf.compat import sft_keywords
from lora_nb.hf.devices import TORCH_DTYPES, auto_dtype, compute_dtype, shards_weights, trainer_device_kwargs
from lora_nb.hf.folders import last_checkpoint
from lora_nb.hf.formats import (FORMAT_COLUMNS, alpaca_batch, detect_format, hold_out, last_turn_batch, load_csv,
                                load_json, load_parquet, load_rows, masks_assistant_turns, split_eval,
                                to_sft_dataset)
from lora_nb.hf.memory_model import needs_checkpointing
from lora_nb.hf.mirror import Mirror, check_mirror
from lora_nb.hf.models import load_model, load_quantized_model, load_tokenizer
from lora_nb.hf.stopping import early_stopping
from lora_nb.hf.trackers import tensorboard_dir, tracker_keywords

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

# --- settings: the recipe's, as lora_nb export wrote them ---
MODEL = "HuggingFaceTB/SmolLM2-135M"
MODEL_CLASS = "AutoModelForCausalLM"
TRUST_REMOTE_CODE = False
DTYPE = "auto"
QUANTIZATION: dict | None = None
DEVICE_MAP: str | dict | None = None
LORA_CONFIG: dict = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}
DATA = "train.jsonl"
DATA_SPLIT = "train"
DATA_FORMAT: str | None = None
COLUMNS: dict | None = None
TRAIN_ON: str | None = None
EVAL: float | str | None = None
SEED = 0
ADAPTER_SEED = 0
SFT_CONFIG: dict = {"per_device_train_batch_size": 4, "max_length": 1024, "max_steps": 100, "report_to": "none"}
STEP_BYTES: dict = {"cpu-4": [2810880, 1277952, 5234491392], "gpu-2": [990720, 98304, 402653184]}
OUTPUT_DIR = "lora-run-script"
RESUME: str | None = None
EARLY_STOPPING: dict | None = None
MIRROR: str | None = None
# --- end of settings ---


def main() -> None:
    output_dir, checkpoint = output_folder()
    if MIRROR:  # checked before anything loads: a mirror that cannot be written is one line
        try:
            mirror_dir = check_mirror(MIRROR, output_dir)
        except (OSError, ValueError) as e:
            sys.exit(f"MIRROR {MIRROR}: cannot be written ({e})")
    dtype = auto_dtype() if DTYPE == "auto" else getattr(torch, TORCH_DTYPES[DTYPE])
    if QUANTIZATION:
        model = load_quantized_model(MODEL, dtype=dtype, quantization=quantization(dtype), device_map=DEVICE_MAP,
                                     trust_remote_code=TRUST_REMOTE_CODE, model_class=MODEL_CLASS)
    else:
        model = load_model(MODEL, dtype=dtype, device_map=DEVICE_MAP, trust_remote_code=TRUST_REMOTE_CODE,
                           model_class=MODEL_CLASS)
    tokenizer = load_tokenizer(MODEL, trust_remote_code=TRUST_REMOTE_CODE)

    torch.manual_seed(ADAPTER_SEED)  # the adapter's initialisation, as recorded with the run's adapter
    # where the launcher shards the weights (FSDP, ZeRO-3) the adapter takes their dtype: FSDP wraps one dtype
    model = get_peft_model(model, LoraConfig(**LORA_CONFIG), autocast_adapter_dtype=not shards_weights())
    model.print_trainable_parameters()

    train_dataset, eval_dataset = load_datasets(tokenizer)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        # several processes without GPUs (accelerate launch --multi_gpu, torchrun): one CPU (gloo) run, as with
        # accelerate launch --cpu; left alone, transformers would train each process alone, each writing the adapter
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    if SFT_CONFIG.get("activation_checkpointing") is None:  # unset: on only where a step would not fit without it
        checkpointing = needs_checkpointing(  # in the dtype the model computes in
            model, compute_dtype(model) if QUANTIZATION and QUANTIZATION.get("load_in_8bit") else dtype, STEP_BYTES,
            batch_size=SFT_CONFIG["per_device_train_batch_size"], max_length=SFT_CONFIG["max_length"])
    else:
        checkpointing = SFT_CONFIG["activation_checkpointing"]
    settings = {
        **trainer_device_kwargs(dtype),  # mixed precision as the dtype, pinned memory only on a GPU
        "activation_checkpointing": checkpointing,
        "assistant_only_loss": "messages" in train_dataset.column_names,
        **SFT_CONFIG,  # an explicit bf16/fp16 in the recipe's train.sft wins, as in lora_nb
        "output_dir": os.path.join(output_dir, "checkpoints"),
    }
    if SFT_CONFIG["report_to"] != "none":  # the run named after its folder in the trackers, as lora_nb names it
        settings = {**tracker_keywords(SFT_CONFIG["report_to"], output_dir), **settings}
    if "tensorboard" in str(SFT_CONFIG["report_to"]):  # its event files in the run folder, as lora_nb's
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", tensorboard_dir(output_dir))
    args = SFTConfig(**sft_keywords(settings))
    # no process writes before all have checked the folder. Only here: SFTConfig sets the processes
    # up; on CPU a PartialState() made before it is a one-process state whose barrier waits for nobody
    PartialState().wait_for_everyone()
    if args.world_size > 1:
        print(f"process {args.process_index} of {args.world_size} on {args.device}", flush=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=tokenizer)
    if EARLY_STOPPING:  # stop once the eval metric stops improving; SFT_CONFIG loads the best eval's adapter at the end
        trainer.add_callback(early_stopping(EARLY_STOPPING, checkpoint))
    if MIRROR:  # the run folder copied to MIRROR/<its name> as it is written: each checkpoint when saved, by rank 0
        mirror = Mirror(output_dir, mirror_dir) if args.process_index == 0 else None
        if mirror is not None:
            trainer.add_callback(MirrorCheckpoints(mirror))
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_state()
    if trainer.is_fsdp_enabled:  # checkpoints stay sharded; the adapter is gathered whole (PEFT's FSDP guide)
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(os.path.join(output_dir, "adapter"))
    if MIRROR and mirror is not None:  # the adapter and the rest, complete before the script ends
        mirror.sync()
        mirror.close()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        end_processes(trainer)


class MirrorCheckpoints(TrainerCallback):
    """Each checkpoint copied into the mirror when it is saved (whole: it appears there only complete)."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    def on_save(self, args, state, control, **kwargs):
        self.mirror.checkpoint(f"checkpoint-{state.global_step}")


def output_folder() -> tuple[str, str | None]:
    """(folder to write, checkpoint to resume from), from the command line: every process checks, before
    anything is written, that no earlier run gets overwritten."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--output-dir", help="a new folder for the adapter and trainer state (default: OUTPUT_DIR)")
    cli.add_argument("--overwrite", action="store_true", help="write into an output folder that already holds files")
    cli.add_argument("--resume", default=RESUME, metavar="RUN_DIR",
                     help="continue RUN_DIR from its last complete checkpoint (default: RESUME; '' starts a new run)")
    # pasted in a cell (%lora export --cell): no __file__, the kernel's command line; run as a file (%run too): ours
    opts = cli.parse_args(None if "__file__" in globals() else [])
    if opts.resume:
        if opts.output_dir:
            cli.error("--resume continues the run in its own folder: leave out --output-dir")
        checkpoint = last_checkpoint(opts.resume)
        if checkpoint is None:
            sys.exit(f"--resume {opts.resume}: no complete checkpoint to continue from "
                     "(checkpoints/checkpoint-N holding its trainer_state.json)")
        return opts.resume, checkpoint
    output_dir = opts.output_dir or OUTPUT_DIR
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not opts.overwrite:
        sys.exit(f"{output_dir} already holds files: pass --output-dir NEW for a new run, "
                 "or --overwrite to write into it")
    return output_dir, None


def load_datasets(tokenizer: PreTrainedTokenizerBase) -> tuple[Dataset, Dataset | None]:
    """(train, eval) datasets in TRL's formats, split as lora_nb splits them; eval is None without EVAL."""
    if DATA.lower().endswith((".json", ".jsonl")):
        rows = load_json(DATA)
    elif DATA.lower().endswith(".csv"):
        rows = load_csv(DATA)
    elif DATA.lower().endswith(".parquet"):
        rows = load_parquet(DATA)
    else:
        rows = load_rows(DATA, DATA_SPLIT)  # a folder, or a dataset on the Hub
    if COLUMNS:  # the data's own column names under lora_nb's (data.columns)
        rows = map_columns(rows, COLUMNS)
    fmt = DATA_FORMAT or detect_format(rows.column_names)
    if EVAL is None:
        return sft_rows(rows, fmt, tokenizer), None
    if isinstance(EVAL, float):
        rows, eval_rows = hold_out(rows, EVAL, SEED)
    else:
        rows, eval_rows = split_eval(rows, EVAL, SEED, DATA)  # another split of DATA, or eval data of its own
        if COLUMNS:
            eval_rows = map_columns(eval_rows, COLUMNS)
    eval_dataset = sft_rows(eval_rows, fmt, tokenizer)
    return sft_rows(rows, fmt, tokenizer), eval_dataset


def sft_rows(rows: Dataset, fmt: str, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """``rows`` in TRL's format, as lora_nb.hf.formats.to_sft_dataset converts DATA_FORMAT, else ``fmt`` (detected)."""
    if TRAIN_ON is not None:  # which tokens carry loss, as the recipe's data.train_on says
        return to_sft_dataset(rows, DATA_FORMAT or fmt, tokenizer, TRAIN_ON)
    if DATA_FORMAT == "alpaca":
        chat = bool(getattr(tokenizer, "chat_template", None))
        return rows.map(alpaca_batch, batched=True, remove_columns=rows.column_names, fn_kwargs={"chat": chat})
    if DATA_FORMAT in ("text", "prompt_completion"):
        return rows.select_columns(FORMAT_COLUMNS[DATA_FORMAT])
    if DATA_FORMAT == "messages":  # whole where TRL can mask the assistant turns, else the last turn as completion
        if masks_assistant_turns(tokenizer):
            return rows.select_columns(FORMAT_COLUMNS[DATA_FORMAT])
        return rows.map(last_turn_batch, batched=True, remove_columns=rows.column_names)
    return to_sft_dataset(rows, fmt, tokenizer)


def quantization(dtype: torch.dtype) -> dict:
    """QUANTIZATION's BitsAndBytesConfig keywords for this launch: where the launcher shards the weights (FSDP,
    ZeRO-3), 4-bit weights are stored in the compute dtype to shard like the rest (as PEFT's QLoRA guides do)."""
    if QUANTIZATION.get("load_in_4bit") and shards_weights():
        return {**QUANTIZATION, "bnb_4bit_quant_storage": dtype}
    return QUANTIZATION


def end_processes(trainer: SFTTrainer) -> None:
    """End a several-process run so that no process hangs or aborts as it exits: left to the interpreter, the
    gloo group aborts the process, or deadlocks on the GIL if freed while its worker drops the last collective's
    tensors (pytorch#56297). So wait for every process, end the group, then free the trainer's hold on it."""
    trainer.accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
    trainer.accelerator.free_memory()  # accelerate's hold on the DDP-wrapped model
    trainer.model_wrapped = None  # and the trainer's
    gc.collect()


if __name__ == "__main__":
    main()
