# The fixed code of every script lora_nb.export.script renders (these comment lines are left out).
# It is read as text, never imported by lora_nb: the script is this docstring and these imports,
# then the recipe's settings as NAME = <literal> lines (MODEL, DATA, SEED, ...), then the code of
# lora_nb.hf's shared modules (export.script.SHARED) and the lora_nb.hf.compat functions this code uses, then the code
# below. So the names it uses come from those; tests/test_portable.py
# checks that a rendered script defines every name it uses. No recipe value is ever written here.
"""LoRA fine-tuning exported by lora_nb {version}: the recipe's settings are the constants below.

Standalone: needs torch, transformers, peft, trl and datasets (not lora_nb).

    python train_lora.py                          # a new run in OUTPUT_DIR
    python train_lora.py --output-dir NEW         # a new run in NEW
    python train_lora.py --resume RUN_DIR         # continue RUN_DIR from its last complete checkpoint
    accelerate launch train_lora.py [...]         # multi-GPU / multi-node, unchanged
    accelerate launch --config_file accelerate_config.yaml train_lora.py   # as lora-nb export --launcher configures

Under N processes a step takes the recipe's batch_size examples in each process, N times one
process's batch; each process prints one "process i of N" line, and only the main one writes files.

It never writes into a folder that already holds files unless --overwrite is given.
"""
import argparse
import gc
import os
import sys

import torch
from accelerate import PartialState
from peft import LoraConfig, get_peft_model
from trl import SFTTrainer


def output_folder():
    """(folder to write, checkpoint to resume from), from the command line.

    Every process checks before anything is written, so no earlier run gets overwritten.
    """
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--output-dir", help="a new folder for the adapter and trainer state (default: OUTPUT_DIR)")
    cli.add_argument("--overwrite", action="store_true", help="write into an output folder that already holds files")
    cli.add_argument("--resume", default=RESUME, metavar="RUN_DIR",
                     help="continue the run in RUN_DIR from its last complete checkpoint (default: RESUME; '' starts a new run)")
    opts = cli.parse_args()
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
        sys.exit(f"{output_dir} already holds files: pass --output-dir NEW for a new run, or --overwrite to write into it")
    return output_dir, None


def load_datasets(tokenizer):
    """(train, eval) datasets in TRL's formats, split as lora_nb splits them; eval is None without EVAL."""
    rows = load_rows(DATA, DATA_SPLIT)
    fmt = DATA_FORMAT or detect_format(rows.column_names)
    rows, eval_rows = split_eval(rows, EVAL, SEED, DATA)
    eval_dataset = to_sft_dataset(eval_rows, fmt, tokenizer) if eval_rows is not None else None
    return to_sft_dataset(rows, fmt, tokenizer), eval_dataset


def quantization(dtype):
    """QUANTIZATION's BitsAndBytesConfig keywords for this launch. Where the launcher shards the
    weights over the processes (FSDP, DeepSpeed ZeRO-3), 4-bit weights are stored in the compute
    dtype, so they shard and gather like the rest (bnb_4bit_quant_storage, as PEFT's QLoRA guides set it)."""
    if QUANTIZATION and QUANTIZATION.get("load_in_4bit") and shards_weights():
        return {**QUANTIZATION, "bnb_4bit_quant_storage": dtype}
    return QUANTIZATION


def has_accelerator():
    """Whether torch sees a GPU (or another accelerator) to put this process on."""
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6 knows every kind; older ones, CUDA
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def main():
    output_dir, checkpoint = output_folder()
    dtype = resolve_dtype(DTYPE)
    model, tokenizer = load_model_and_tokenizer(MODEL, dtype=dtype, quantization=quantization(dtype), device_map=DEVICE_MAP,
                                                trust_remote_code=TRUST_REMOTE_CODE, model_class=MODEL_CLASS)

    torch.manual_seed(ADAPTER_SEED)  # the adapter's initialisation, as recorded with the run's adapter
    # sharded 4-bit weights are stored in the compute dtype: the adapter joins them in it (FSDP wraps one dtype)
    model = get_peft_model(model, LoraConfig(**LORA_CONFIG), autocast_adapter_dtype=not shards_weights())
    model.print_trainable_parameters()

    train_dataset, eval_dataset = load_datasets(tokenizer)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator():
        # launched as several processes on a machine without GPUs (accelerate launch --multi_gpu, torchrun): make
        # them one CPU (gloo) run, as accelerate launch --cpu does; left alone, transformers would train each
        # process alone, and each would write the adapter
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    checkpointing = choose_checkpointing(model, SFT_CONFIG.get("activation_checkpointing"),
                                         batch_size=SFT_CONFIG["per_device_train_batch_size"],
                                         max_length=SFT_CONFIG["max_length"])
    args = sft_config({
        **trainer_device_kwargs(dtype),  # mixed precision as the dtype, pinned memory only on a GPU
        "activation_checkpointing": checkpointing,
        "assistant_only_loss": "messages" in train_dataset.column_names,
        **SFT_CONFIG,  # an explicit bf16/fp16 in the recipe's train.sft wins, as in lora_nb
        "output_dir": os.path.join(output_dir, "checkpoints"),
    })
    # no process writes before all have checked the folder. Only here: SFTConfig sets the processes
    # up; on CPU a PartialState() made before it is a one-process state whose barrier waits for nobody
    PartialState().wait_for_everyone()
    if args.world_size > 1:
        print(f"process {args.process_index} of {args.world_size} on {args.device}", flush=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_state()
    if trainer.is_fsdp_enabled:  # checkpoints stay sharded; the adapter is gathered whole (PEFT's FSDP guide)
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(os.path.join(output_dir, "adapter"))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        end_processes(trainer)


def end_processes(trainer):
    """End a several-process run so that no process hangs or aborts as it exits. Left to the
    interpreter, torch's gloo group aborts the process; freed while its worker thread still drops
    the last collective's tensors, it deadlocks on the GIL (pytorch#56297). So: wait for every
    process (the worker is then idle), end the group, then free the trainer, and with it DDP's
    hold on the group, here rather than at exit."""
    trainer.accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
    trainer.accelerator.free_memory()  # accelerate's hold on the DDP-wrapped model
    trainer.model_wrapped = None  # and the trainer's
    gc.collect()


if __name__ == "__main__":
    main()
