"""Verbs that write the result: ``%lora save``, ``%lora merge``, ``%lora export``.

Each refuses a folder that is not empty (an existing file) unless given ``--overwrite``, as the
API's ``overwrite=True``; ``--force`` is the same flag's old name, still accepted.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

from ...core.files import check_free
from .arguments import given, overwrite_flag
from .magic import LoraMagics
from .registry import verb


def _dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="the folder to write: new or empty (~ and $VARS are expanded)")
    overwrite_flag(p, "write into a folder that is not empty")


@verb("save", "save the adapter (safetensors) and tokenizer", "%lora save my-adapter", _dir_flag)
def _save(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> None:
    check_free(args.dir, "dir", overwrite=args.overwrite, option="--overwrite")  # names this magic's flag
    print(f"adapter saved in {m.session.save(args.dir, overwrite=args.overwrite)}")


def _merge_flags(p: argparse.ArgumentParser) -> None:
    _dir_flag(p)
    p.add_argument("--into", default=None, help="dequantized (default: what QLoRA trained against) or original")
    p.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: the dtype the adapter computed in)")


@verb("merge", "write a standalone merged model (QLoRA: into the dequantised weights)", "%lora merge merged-model",
      _merge_flags)
def _merge(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> None:
    check_free(args.dir, "dir", overwrite=args.overwrite, option="--overwrite")
    out = m.session.merge(args.dir, overwrite=args.overwrite, **given(into=args.into, dtype=args.dtype))
    print(f"merged model written to {out}")


def _export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="the script to write (~ and $VARS are expanded); none: show it")
    p.add_argument("--cell", action="store_true", help="put the script into the next cell")
    overwrite_flag(p, "replace FILE if it exists")


@verb("export", "the session as a standalone transformers/peft/trl script", "%lora export train_lora.py",
      _export_flags)
def _export(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    from IPython.display import Code

    script = m.session.export()
    if args.cell:
        m.shell.set_next_input(script, replace=False)
    if args.file:
        path = check_free(args.file, "FILE", overwrite=args.overwrite, option="--overwrite")
        path.write_text(script)
        print(f"wrote {path} — run it with: accelerate launch {path}")
    elif not args.cell:
        return Code(script, language="python")
    return None
