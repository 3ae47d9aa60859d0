"""Verbs of the model and adapter steps: ``%lora load``, ``%lora targets``, ``%lora inject``."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from ...recipe.names import to_settings
from ...recipe.schema import LoraSection, ModelSection
from .arguments import field_help, fields_of, section_body
from .magic import LoraMagics
from .registry import verb

LORA_KEYS = fields_of(LoraSection)


def _load_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=field_help(ModelSection, "name") + " ~ and $VARS are expanded.")
    bits = p.add_mutually_exclusive_group()
    bits.add_argument("--4bit", dest="quant", action="store_const", const="4bit",
                      help="QLoRA: NF4 weights, double quantisation")
    bits.add_argument("--8bit", dest="quant", action="store_const", const="8bit", help="LLM.int8 weights")
    p.add_argument("--dtype", default=ModelSection.dtype,
                   help=field_help(ModelSection, "dtype") + " (default: %(default)s)")
    p.add_argument("--device-map", default=None, help=field_help(ModelSection, "device_map"))
    p.add_argument("--trust-remote-code", action="store_true", help=field_help(ModelSection, "trust_remote_code"))


@verb("load", "load a model and tokenizer (4-bit = QLoRA)", "%lora load Qwen/Qwen2.5-0.5B-Instruct --4bit",
      _load_flags)
def _load(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> None:
    m.session.load(args.model, quant=args.quant, dtype=args.dtype, device_map=args.device_map,
                   trust_remote_code=args.trust_remote_code)
    print(f"loaded {args.model} ({args.quant or args.dtype}); next: %lora targets, %lora inject")


def _targets_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?",
                   help="a Hub name or folder (only its config is read); default: the loaded model")
    p.add_argument("--r", type=int, default=LoraSection.r,
                   help=field_help(LoraSection, "r") + " (default: %(default)s)")


@verb("targets", "modules by role with LoRA costs (a MODEL name reads only its config)",
      "%lora targets meta-llama/Llama-3.1-8B --r 16", _targets_flags)
def _targets(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    return m.session.targets(args.model, r=args.r)


@verb("inject", "add a LoRA adapter: r, alpha, dropout, targets, variant, ...",
      "%lora inject r=16 alpha=32 targets=attention", free="settings", keys=LORA_KEYS)
def _inject(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> None:
    settings = m.settings(args.settings, LORA_KEYS)
    if cell is not None:
        body = to_settings(section_body(cell, "inject", "lora"), LORA_KEYS, problem="unknown setting")
        settings = {**body, **settings}
    m.session.inject(**settings)
