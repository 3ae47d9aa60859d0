"""The ``lora-nb`` command: demo, run a recipe, show targets, export a script."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .errors import ConfigError


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    figures = run_demo(args.out, model=args.model, steps=args.steps, quant=None if args.no_quant else "auto",
                       overwrite=args.force)
    return 0 if figures["accuracy_after"] > figures["accuracy_before"] else 1


def _run(args: argparse.Namespace) -> int:
    from .pipeline import run as run_recipe
    from .recipe import Recipe

    run = run_recipe(Recipe.from_yaml(args.recipe))
    print(run)
    return 130 if run.status == "interrupted" else 0


def _targets(args: argparse.Namespace) -> int:
    from .discovery import discover

    print(discover(args.model, r=args.r, trust_remote_code=args.trust_remote_code))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .pipeline import to_script
    from .recipe import Recipe

    script = to_script(Recipe.from_yaml(args.recipe))
    if args.output:
        from .files import check_free

        check_free(args.output, "--output", overwrite=args.force, option="--force").write_text(script)
        print(f"wrote {args.output}")
    else:
        print(script)
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser (one subcommand per verb)."""
    p = argparse.ArgumentParser(prog="lora-nb", description="LoRA/QLoRA fine-tuning: demo, recipes, target discovery, script export.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="the whole workflow offline on an embedded tiny model")
    d.add_argument("--out", default="lora_nb_demo", help="folder for the run, merged model, chart and script")
    d.add_argument("--model", default=None, help="a Hub name or folder instead of the embedded model")
    d.add_argument("--steps", type=int, default=None, help="training steps (default 200 embedded, 100 otherwise)")
    d.add_argument("--no-quant", action="store_true", help="plain LoRA even where 4-bit runs")
    d.add_argument("--force", action="store_true", help="write into --out even if it holds an earlier demo")
    d.set_defaults(fn=_demo)
    r = sub.add_parser("run", help="run a recipe: load, inject, train")
    r.add_argument("recipe", help="recipe YAML file")
    r.set_defaults(fn=_run)
    t = sub.add_parser("targets", help="the discovery table for a model (reads only its config)")
    t.add_argument("model", help="Hub name or local folder")
    t.add_argument("--r", type=int, default=16, help="rank for the LoRA parameter counts")
    t.add_argument("--trust-remote-code", action="store_true")
    t.set_defaults(fn=_targets)
    e = sub.add_parser("export", help="a recipe as a standalone transformers/peft/trl script")
    e.add_argument("recipe", help="recipe YAML file")
    e.add_argument("-o", "--output", help="write the script here instead of printing it")
    e.add_argument("--force", action="store_true", help="replace --output if it exists")
    e.set_defaults(fn=_export)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``lora-nb``. Bad settings print one line naming the key, not a traceback.

    Example:
        >>> main(["targets", "./my-model", "--r", "8"])   # doctest: +SKIP
    """
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"lora-nb: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
