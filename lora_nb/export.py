"""Render a Recipe as a standalone training script: transformers, peft, trl and datasets only.

The script repeats what :func:`lora_nb.run` does, call for call: the same load, the same
``LoraConfig`` and ``SFTConfig`` keywords (built by the same functions), the same seed before the
adapter is initialised, and the data and checkpoint helpers of :mod:`lora_nb.portable` copied in
verbatim. Run with the same seed it logs the same losses, and it runs unchanged under
``accelerate launch``.

The script's code is fixed text (``HEADER`` and ``MAIN``); the recipe reaches it only as
``NAME = repr(value)`` lines, each checked to read back as the same literal, so no setting, path or
name can inject code.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

from . import __version__, portable
from .errors import ConfigError
from .recipe import Recipe, lora_kwargs

HEADER = '''"""LoRA fine-tuning exported by lora_nb {version}: the recipe's settings are the constants below.

Standalone: needs torch, transformers, peft, trl and datasets (not lora_nb).

    python train_lora.py                          # a new run in OUTPUT_DIR
    python train_lora.py --output-dir NEW         # a new run in NEW
    python train_lora.py --resume RUN_DIR         # continue RUN_DIR from its last complete checkpoint
    accelerate launch train_lora.py [...]         # multi-GPU / multi-node, unchanged

It never writes into a folder that already holds files unless --overwrite is given.
"""
import argparse
import os
import sys

import torch
import transformers
from accelerate import PartialState
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoTokenizer, BitsAndBytesConfig
from trl import SFTConfig, SFTTrainer
'''

MAIN = '''

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


def load_model(dtype):
    """The base model as lora_nb loads it: quantised if the recipe says so, one GPU per process."""
    quantization = None
    if QUANTIZATION:
        compute = {"bnb_4bit_compute_dtype": dtype} if QUANTIZATION.get("load_in_4bit") else {}
        quantization = BitsAndBytesConfig(**QUANTIZATION, **compute)
    device_map = DEVICE_MAP
    if device_map is None and torch.cuda.is_available():
        device_map = {"": PartialState().local_process_index}  # each process of accelerate launch takes its own GPU
    model = getattr(transformers, MODEL_CLASS).from_pretrained(
        MODEL,
        dtype=dtype,
        quantization_config=quantization,
        device_map=device_map,
        trust_remote_code=TRUST_REMOTE_CODE,
        use_safetensors=True,
    )
    pin_4bit_layout(model)
    if QUANTIZATION:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=torch.cuda.is_available())
    return model


def load_datasets(tokenizer):
    """(train, eval) datasets in TRL's formats, split as lora_nb splits them; eval is None without EVAL."""
    rows = load_rows(DATA, DATA_SPLIT)
    fmt = DATA_FORMAT or detect_format(rows.column_names)
    eval_rows = None
    if isinstance(EVAL, float):
        parts = rows.train_test_split(test_size=EVAL, seed=SEED)
        rows, eval_rows = parts["train"], parts["test"]
    elif EVAL:
        eval_rows = load_rows(EVAL) if os.path.exists(EVAL) else load_rows(DATA, EVAL)
    eval_dataset = to_sft_dataset(eval_rows, fmt, tokenizer) if eval_rows is not None else None
    return to_sft_dataset(rows, fmt, tokenizer), eval_dataset


def main():
    output_dir, checkpoint = output_folder()
    dtype = resolve_dtype(DTYPE)
    model = load_model(dtype)
    tokenizer = AutoTokenizer.from_pretrained(MODEL, trust_remote_code=TRUST_REMOTE_CODE)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    torch.manual_seed(SEED)  # the adapter's initialisation
    model = get_peft_model(model, LoraConfig(**LORA_CONFIG))
    model.print_trainable_parameters()

    train_dataset, eval_dataset = load_datasets(tokenizer)
    args = SFTConfig(**{
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "assistant_only_loss": "messages" in train_dataset.column_names,
        **SFT_CONFIG,  # an explicit bf16/fp16 in the recipe's train.sft wins, as in lora_nb
        "output_dir": os.path.join(output_dir, "checkpoints"),
    })
    # no process writes before all have checked the folder. Only here: SFTConfig sets the processes
    # up; on CPU a PartialState() made before it is a one-process state whose barrier waits for nobody
    PartialState().wait_for_everyone()
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_state()
    trainer.save_model(os.path.join(output_dir, "adapter"))


if __name__ == "__main__":
    main()
'''


def render_script(recipe: Recipe, rows: int | None = None) -> str:
    """The standalone script for ``recipe`` (see :func:`lora_nb.to_script`).

    ``rows`` (the number of training rows) only sets the default eval interval; it is read from
    the data when not given.

    Example:
        >>> print(render_script(Recipe.from_yaml("recipe.yaml")))   # doctest: +SKIP
    """
    settings = "".join(_assignment(name, value) for name, value in script_settings(recipe, rows).items())
    helpers = "\n\n".join(inspect.getsource(fn) for fn in _portable_functions())
    head = HEADER.format(version=__version__)  # lora_nb's own version: the one placeholder, never a recipe value
    return f"{head}\n{settings}\n\n{helpers}{MAIN}"


def script_settings(recipe: Recipe, rows: int | None = None) -> dict:
    """The script's constants, name → value: everything of ``recipe`` the fixed code reads.

    Example:
        >>> script_settings(Recipe.from_yaml("recipe.yaml"))["OUTPUT_DIR"]   # doctest: +SKIP
        'runs/first-script'
    """
    from .injection import lora_config_kwargs
    from .loading import quant_kwargs
    from .training import sft_config_kwargs

    m, d, t = recipe.model, recipe.data, recipe.train
    meta = _meta_model(recipe)
    quantization = quant_kwargs(m.quant, None)
    if quantization:
        quantization.pop("bnb_4bit_compute_dtype", None)  # the script passes the dtype it resolves
    if rows is None:
        rows = _train_rows(recipe) if t.steps is None and d.eval is not None and t.eval_steps is None else 0
    sft_config = sft_config_kwargs(t, "", d.eval is not None, rows)
    sft_config.pop("output_dir")  # the script's --output-dir / --resume decide it
    sft_config.pop("resume", None)  # resuming goes through trainer.train(), SFTConfig has no such argument
    return dict(
        MODEL=m.name, MODEL_CLASS=_class_name(meta), TRUST_REMOTE_CODE=m.trust_remote_code, DTYPE=m.dtype,
        QUANTIZATION=quantization, DEVICE_MAP=m.device_map, LORA_CONFIG=lora_config_kwargs(meta, **lora_kwargs(recipe.lora)),
        DATA=d.path, DATA_SPLIT=d.split, DATA_FORMAT=d.format, EVAL=d.eval, SEED=t.seed, SFT_CONFIG=sft_config,
        # a folder of its own: running the script must not overwrite the API run's adapter and checkpoints
        OUTPUT_DIR=f"{recipe.output_dir or 'lora-run'}-script", RESUME=t.resume,
        ALPACA_PROMPT=portable.ALPACA_PROMPT, ALPACA_PROMPT_INPUT=portable.ALPACA_PROMPT_INPUT,
    )


def _assignment(name: str, value: Any) -> str:
    """``NAME = <repr>``, refused unless it reads back as the same literal (never an object's repr)."""
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise ConfigError(name, value, problem="cannot be written into a script as a Python literal")
    return f"{name} = {text}\n"


def _train_rows(recipe: Recipe) -> int:
    """Training rows after the eval split, as datasets' train_test_split counts them."""
    import math

    n = len(portable.load_rows(recipe.data.path, recipe.data.split))
    return n - math.ceil(n * recipe.data.eval) if isinstance(recipe.data.eval, float) else n


def _portable_functions() -> list[Any]:
    return [fn for fn in vars(portable).values() if inspect.isfunction(fn) and fn.__module__ == portable.__name__]


def _meta_model(recipe: Recipe):
    from .discovery import meta_model

    try:
        return meta_model(recipe.model.name, trust_remote_code=recipe.model.trust_remote_code)
    except OSError as e:
        raise ConfigError("model.name", recipe.model.name,
                          problem=f"export needs the model's config.json to resolve targets ({e.__class__.__name__})") from None


def _class_name(meta: Any) -> str:
    from .loading import model_class

    cls = model_class(meta.config)
    return cls.__name__
