"""Render a Recipe as a standalone training script: transformers, peft, trl and datasets only.

The script repeats what :meth:`Recipe.run` does, call for call: the same load, the same
``LoraConfig`` and ``SFTConfig`` keywords (built by the same functions), the same seed before the
adapter is initialised, and the data helpers of :mod:`lora_nb.portable` copied in verbatim. Run
with the same seed it logs the same losses, and it runs unchanged under ``accelerate launch``.

Every value is written with ``repr``: no setting, path or name can inject code.
"""

from __future__ import annotations

import inspect
from typing import Any

from . import __version__, portable
from .errors import ConfigError
from .recipe import Recipe, lora_kwargs

HEADER = '''"""LoRA fine-tuning of {model} — exported by lora_nb {version}.

Standalone: needs torch, transformers, peft, trl and datasets (not lora_nb).

    python train_lora.py [--output-dir DIR]
    accelerate launch train_lora.py        # multi-GPU / multi-node, unchanged
"""
import argparse
import os

import torch
from accelerate import PartialState
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoTokenizer, BitsAndBytesConfig, {model_class}
from trl import SFTConfig, SFTTrainer

MODEL = {model!r}
DATA = {data!r}
DATA_SPLIT = {split!r}
DATA_FORMAT = {fmt!r}
EVAL = {eval!r}
SEED = {seed!r}
OUTPUT_DIR = {output_dir!r}
'''

MAIN = '''

def main():
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--output-dir", default=OUTPUT_DIR, help="where the adapter and trainer state go")
    output_dir = cli.parse_args().output_dir
    dtype = resolve_dtype({dtype!r})
    device_map = {{"": PartialState().local_process_index}} if torch.cuda.is_available() else None
    model = {model_class}.from_pretrained(
        MODEL,
        dtype=dtype,
        quantization_config={quantization},
        device_map={device_map},
        trust_remote_code={trust_remote_code!r},
        use_safetensors=True,
    )
{prepare}    tokenizer = AutoTokenizer.from_pretrained(MODEL, trust_remote_code={trust_remote_code!r})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    torch.manual_seed(SEED)  # the adapter's initialisation
    model = get_peft_model(model, LoraConfig(**{lora_config!r}))
    model.print_trainable_parameters()

    rows = load_rows(DATA, DATA_SPLIT)
    fmt = DATA_FORMAT or detect_format(rows.column_names)
    eval_rows = None
    if isinstance(EVAL, float):
        parts = rows.train_test_split(test_size=EVAL, seed=SEED)
        rows, eval_rows = parts["train"], parts["test"]
    elif EVAL:
        eval_rows = load_rows(EVAL) if os.path.exists(EVAL) else load_rows(DATA, EVAL)
    train_dataset = to_sft_dataset(rows, fmt, tokenizer)
    eval_dataset = to_sft_dataset(eval_rows, fmt, tokenizer) if eval_rows is not None else None

    args = SFTConfig(
        output_dir=os.path.join(output_dir, "checkpoints"),
        **{sft_config!r},
        assistant_only_loss="messages" in train_dataset.column_names,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=tokenizer)
    trainer.train()
    trainer.save_state()
    trainer.save_model(os.path.join(output_dir, "adapter"))


if __name__ == "__main__":
    main()
'''


def render_script(recipe: Recipe, rows: int | None = None) -> str:
    """The standalone script for ``recipe`` (see :meth:`Recipe.to_script`).

    ``rows`` (the number of training rows) only sets the default eval interval; it is read from
    the data when not given.

    Example:
        >>> print(render_script(Recipe.from_yaml("recipe.yaml")))   # doctest: +SKIP
    """
    from .loading import quant_kwargs
    from .training import sft_config_kwargs

    m, d, t = recipe.model, recipe.data, recipe.train
    output_dir = recipe.output_dir or "lora-run"
    meta = _meta_model(recipe)
    from .injection import lora_config_kwargs

    lora_config = lora_config_kwargs(meta, **lora_kwargs(recipe.lora))
    bnb = quant_kwargs(m.quant, None)
    quantization = "None"
    if bnb:
        bnb.pop("bnb_4bit_compute_dtype", None)
        extra = ", bnb_4bit_compute_dtype=dtype" if m.quant == "4bit" else ""
        quantization = f"BitsAndBytesConfig(**{bnb!r}{extra})"
    prepare = ("    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=torch.cuda.is_available())\n"
               if bnb else "")
    if rows is None:
        rows = _train_rows(recipe) if t.steps is None and d.eval is not None and t.eval_steps is None else 0
    sft_config = sft_config_kwargs(t, "", d.eval is not None, rows)
    sft_config.pop("output_dir")
    model_class = _class_name(meta)
    device_map = "device_map" if m.device_map is None else repr(m.device_map)
    head = HEADER.format(model=m.name, version=__version__, model_class=model_class, data=d.path, split=d.split,
                         fmt=d.format, eval=d.eval, seed=t.seed, output_dir=output_dir)
    helpers = "\n\n".join(inspect.getsource(fn) for fn in _portable_functions())
    constants = "".join(f"{name} = {getattr(portable, name)!r}\n" for name in ("ALPACA_PROMPT", "ALPACA_PROMPT_INPUT"))
    body = MAIN.format(dtype=m.dtype, model_class=model_class, quantization=quantization, device_map=device_map,
                       trust_remote_code=m.trust_remote_code, prepare=prepare, lora_config=lora_config, sft_config=sft_config)
    return f"{head}{constants}\n\n{helpers}{body}"


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
