"""Verbs around the pipeline: ``%lora runs``, ``%lora doctor``, ``%lora panel``, ``%lora help``."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from ...core.errors import is_positive
from .magic import LoraMagics
from .registry import help_text, verb, verb_help


def _positive(text: str) -> int:
    if not (text.isdigit() and is_positive(int(text))):
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(text)


def _runs_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default="runs", help="the folder holding run folders (default: %(default)s)")
    p.add_argument("--limit", type=_positive, default=20, help="show the newest N (default: %(default)s)")
    p.add_argument("--filter", default=None, metavar="TEXT", help="key=value terms (r=16 status=finished lr=2e-4) "
                   "and/or text in the run's name or label; all must match")


@verb("runs", "past runs, newest first: this kernel's and every run folder on disk (other kernels, the CLI)",
      '%lora runs --filter "r=16 status=finished" --limit 5', _runs_flags, libraries=False)
def _runs(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    from ...runs.table import RunTable

    runs = m.session.find_runs(args.dir, filter=args.filter)
    if len(runs) > args.limit:
        print(f"the newest {args.limit} of {len(runs)} runs (--limit N shows more, --filter TEXT picks)")
    return RunTable(runs[:args.limit])


@verb("doctor", "library versions against the tested matrix, device, dtype auto picks, 4-bit path, caches, offline",
      "%lora doctor")
def _doctor(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    from ...core.doctor import doctor

    return doctor()


@verb("panel", "the widget panel: model, targets, data preview, train / stop / compare / export", "%lora panel")
def _panel(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    from ..panel import Panel

    return Panel(m.session)


def _help_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("verb", nargs="?", help="a verb: its flags, its settings with their defaults, an example")


@verb("help", "the verbs, with an example each; %lora help VERB: its flags and settings", "%lora help train",
      _help_flags, libraries=False)
def _help(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> None:
    print(verb_help(args.verb) if args.verb else help_text())
