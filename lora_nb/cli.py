"""The ``lora-nb`` command: demo, run a recipe, show targets, export a script, check the install."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .core.errors import ConfigError


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    figures = run_demo(args.output_dir, model=args.model, steps=args.steps, quant=None if args.no_quant else "auto",
                       overwrite=args.overwrite)
    return 0 if figures["accuracy_after"] > figures["accuracy_before"] else 1


def _run(args: argparse.Namespace) -> int:
    from .experiments.pipeline import run as run_recipe
    from .recipe.schema import Recipe

    run = run_recipe(Recipe.from_yaml(args.recipe))
    print(run)
    return 130 if run.status == "interrupted" else 0


def _targets(args: argparse.Namespace) -> int:
    from .model.targets import targets_with_memory

    print(targets_with_memory(args.model, r=args.r, trust_remote_code=args.trust_remote_code))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .core.doctor import doctor

    report = doctor()
    print(report)
    return 1 if any(" older than " in line or " not installed" in line for line in report.advice) else 0


def _export(args: argparse.Namespace) -> int:
    from .core.files import check_free
    from .export.launch import CONFIG_FILE, launch_command, launch_config
    from .experiments.pipeline import to_script
    from .recipe.schema import Recipe

    engine = _engine(args)  # options and output paths are checked before the recipe is rendered (seconds)
    recipe = Recipe.from_yaml(args.recipe)
    if not args.output:
        print(to_script(recipe))
        return 0
    target = check_free(args.output, "--output", overwrite=args.overwrite, option="--overwrite")
    config = None
    if args.launcher:
        config = check_free(target.with_name(CONFIG_FILE), "--output", overwrite=args.overwrite, option="--overwrite")
        if config == target:
            raise ConfigError("--output", str(target),
                              problem=f"{CONFIG_FILE} is the accelerate config's name: name the script otherwise")
    files = {target: to_script(recipe)}
    if config:
        files[config] = launch_config(recipe, args.gpus, engine)
    for path, text in files.items():  # written once both are rendered
        path.write_text(text)
        print(f"wrote {path}")
    if config:
        print(launch_command(target, config))
    return 0


def _push(args: argparse.Namespace) -> int:
    from .inference.publish import push

    print(push(args.run, args.repo, merged=args.merged, private=not args.public, dry_run=args.dry_run))
    return 0


def _engine(args: argparse.Namespace) -> Optional[str]:
    """The engine export's launch options choose (None: DDP), once they are checked to fit together."""
    from .export.launch import ZERO_STAGES

    if not args.launcher:
        options = {"--gpus": args.gpus is not None, "--fsdp": args.fsdp, "--deepspeed": args.deepspeed is not None}
        given = next((flag for flag, used in options.items() if used), None)
        if given:
            raise ConfigError(given, problem="configures a launch: add --launcher accelerate")
        return None
    if args.gpus is None or args.gpus < 1:
        raise ConfigError("--gpus", args.gpus,
                          problem="the number of GPUs (one process each) is required with --launcher, at least 1")
    if not args.output:
        raise ConfigError("--launcher", args.launcher,
                          problem="writes the script and its accelerate config side by side: add -o train_lora.py")
    if args.fsdp and args.deepspeed:
        raise ConfigError("--fsdp", problem="one engine at a time: --fsdp or --deepspeed, not both")
    if args.deepspeed and args.deepspeed not in ZERO_STAGES:
        raise ConfigError("--deepspeed", args.deepspeed, allowed=ZERO_STAGES)
    return "fsdp" if args.fsdp else args.deepspeed


def parser() -> argparse.ArgumentParser:
    """The argument parser (one subcommand per verb)."""
    p = argparse.ArgumentParser(prog="lora-nb",
                                description="LoRA/QLoRA fine-tuning: demo, recipes, target discovery, script export.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="the whole workflow offline on an embedded tiny model")
    d.add_argument("--output-dir", "--out", dest="output_dir", default="lora_nb_demo",
                   help="folder for the run, merged model, chart and script (--out: its older name)")
    d.add_argument("--model", default=None, help="a Hub name or folder instead of the embedded model")
    d.add_argument("--steps", type=int, default=None, help="training steps (default 200 embedded, 100 otherwise)")
    d.add_argument("--no-quant", action="store_true", help="plain LoRA even where 4-bit runs")
    d.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                   help="write into --output-dir even if it holds an earlier demo (--force: its older name)")
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
    e.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                   help="replace --output (and its accelerate config) if it exists (--force: its older name)")
    e.add_argument("--launcher", choices=["accelerate"],
                   help="also write accelerate_config.yaml next to --output and print the command "
                        "that launches the script")
    e.add_argument("--gpus", type=int, help="GPUs to train on with --launcher, one process each")
    e.add_argument("--fsdp", action="store_true", help="with --launcher: shard the weights with FSDP (LoRA and QLoRA)")
    e.add_argument("--deepspeed", metavar="zero2|zero3", help="with --launcher: DeepSpeed ZeRO stage 2 or 3")
    e.set_defaults(fn=_export)
    u = sub.add_parser("push", help="a run's adapter (or merged model) to the Hugging Face Hub with a model card")
    u.add_argument("run", help="the run folder")
    u.add_argument("repo", help="the Hub repo id, user/name")
    u.add_argument("--merged", action="store_true", help="push the merged model instead of the adapter")
    u.add_argument("--public", action="store_true", help="make a new repo public (default: private)")
    u.add_argument("--dry-run", action="store_true", help="build the folder and model card, upload nothing")
    u.set_defaults(fn=_push)
    sub.add_parser("doctor", help="versions against the tested matrix, device, dtype, "
                                  "4-bit path, caches").set_defaults(fn=_doctor)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``lora-nb``. Bad settings print one line naming the key, not a traceback.

    Example:
        >>> main(["targets", "./my-model", "--r", "8"])  # doctest: +ELLIPSIS
        ./my-model: 46,816 parameters; LoRA at r=8
        role               modules  LoRA params  % of model
        -----------------  -------  -----------  ----------
        attention                8        3,584  7.656%
        ...
    """
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"lora-nb: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
