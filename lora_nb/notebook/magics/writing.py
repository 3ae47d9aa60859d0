"""Verbs that write the result: ``%lora save``, ``%lora merge``, ``%lora export``, ``%lora push``.

Each refuses a folder that is not empty (an existing file) unless given ``--overwrite``, as the
API's ``overwrite=True``; ``--force`` is the same flag's old name, still accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
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


PUSH_KEYS = {"run": dataclasses.field(default="", metadata={"help": "the run folder to push (default: the "
                                                                    "session's last run)"})}


def _push_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", help="the Hub repo id, user/name")
    p.add_argument("--merged", action="store_true", help="push the merged model instead of the adapter")
    p.add_argument("--public", action="store_true", help="make a new repo public (default: private)")
    p.add_argument("--dry-run", action="store_true", help="build the folder and model card, upload nothing")


@verb("push", "the last run's adapter (or merged model) to the Hugging Face Hub with a model card",
      "%lora push me/my-lora --dry-run", _push_flags, free="settings", keys=PUSH_KEYS)
def _push(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    settings = m.settings(args.settings, PUSH_KEYS)
    result = m.session.push(args.repo, run=settings.get("run") or None, merged=args.merged,
                            private=not args.public, dry_run=args.dry_run)
    print(result)
    return None
