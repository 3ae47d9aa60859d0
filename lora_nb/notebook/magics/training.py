"""Verbs of the training step: ``%lora data check``, ``%lora train``, ``%lora resume``, ``%lora sweep``,
``%lora wait``, ``%lora stop``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Optional

from IPython.core.error import UsageError

from ...core.errors import ConfigError
from ...core.files import check_free, expand_user
from ...recipe.names import to_settings
from ...recipe.schema import DataSection, Recipe, TrainSection
from ..typed import comma_values, read_value
from .arguments import cell_yaml, fields_of, overwrite_flag
from .magic import LoraMagics
from .model import LORA_KEYS
from .registry import verb

TRAIN_KEYS = {**fields_of(TrainSection), "data": fields_of(DataSection)["path"],
              **{k: v for k, v in fields_of(DataSection).items() if k != "path"},
              "output_dir": fields_of(Recipe)["output_dir"]}
PATH_KEYS = ("data", "eval", "output_dir", "resume", "mirror")  # expanded here, so the run's recipe holds the real path


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--background", action="store_true", help="train in a thread: the kernel stays free, Stop works")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--fresh", action="store_true", help="put a fresh adapter (the last inject's settings, else the "
                       "defaults) on the base first; without it training continues the current adapter")
    start.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue that run from its last checkpoint")
    overwrite_flag(p, "replace the run in a taken output_dir")


@verb("train", "train the current adapter further with a live chart "
      "(--fresh: a new adapter; --background; --resume RUN_DIR)",
      "%lora train data=train.jsonl steps=200 lr=2e-4", _train_flags, "settings", TRAIN_KEYS)
def _train(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    settings = m.settings(args.settings, TRAIN_KEYS)
    if cell is not None:
        body = cell_yaml(cell, "train")
        data = body.pop("data", None)
        if isinstance(data, dict):  # a data section: {path, format, eval, split}
            body.update({("data" if k == "path" else k): v for k, v in data.items()})
        elif data is not None:
            body["data"] = data
        flat = to_settings({**body.pop("train", {}), **body}, TRAIN_KEYS, problem="unknown setting")
        settings = {**flat, **settings}
    if "data" not in settings:
        raise UsageError("%lora train needs data=PATH (a file, a Hub dataset, or a notebook variable)")
    if args.resume:
        settings["resume"] = args.resume
    for key in PATH_KEYS:
        if isinstance(settings.get(key), str):
            settings[key] = expand_user(settings[key])
    data = settings.pop("data")
    if settings.get("output_dir") and not settings.get("resume"):  # checked here too: the error names the flags
        check_free(settings["output_dir"], "output_dir", overwrite=args.overwrite,
                   option="--overwrite (or --resume DIR)")
    run = m.session.train(data, fresh=args.fresh, background=args.background, live=m.in_kernel(),
                          overwrite=args.overwrite, **settings)
    return m.shown(run, args.background)


RESUME_KEYS = {
    "mirror": dataclasses.field(default=None, metadata={
        "help": "a mirror folder to look in too (default: $LORA_NB_MIRROR and the mirrors local runs recorded)"}),
    "runs": dataclasses.field(default="runs", metadata={"help": "the folder of local run folders"}),
}


def _resume_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--background", action="store_true", help="train in a thread: the kernel stays free, Stop works")


@verb("resume", "continue the newest killed / interrupted / stopped run (or RUN) from runs/ or a mirror, "
      "its base reloaded", "%lora resume mirror=/content/drive/MyDrive/runs", _resume_flags, "settings", RESUME_KEYS)
def _resume(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    named = [item for item in args.settings if "=" not in item]
    if len(named) > 1:
        raise UsageError(f"%lora resume takes one run at most, got {' '.join(named)}")
    settings = m.settings([item for item in args.settings if "=" in item], RESUME_KEYS)
    paths = {k: expand_user(v) for k, v in settings.items() if isinstance(v, str)}
    run = m.session.resume(expand_user(named[0]) if named else None, **paths, background=args.background,
                           live=m.in_kernel())
    return None if run is None else m.shown(run, args.background)


CHECK_KEYS = {"data": fields_of(DataSection)["path"],
              "rows": dataclasses.field(default=3, metadata={"help": "the examples shown (the first ones)"}),
              **{k: fields_of(DataSection)[k] for k in ("format", "train_on", "split", "columns")},
              "max_length": fields_of(TrainSection)["max_length"]}


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["check"], help="check: which tokens of the first rows carry loss, and why")


@verb("data", "check: which tokens of the first rows carry loss (chat template marks, data.train_on)",
      "%lora data check data=train.jsonl train_on=assistant rows=2", _data_flags, "settings", CHECK_KEYS)
def _data(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    settings = m.settings(args.settings, CHECK_KEYS)
    if "data" not in settings:
        raise UsageError("%lora data check needs data=PATH (a file, a Hub dataset, or a notebook variable)")
    data = settings.pop("data")
    return m.session.check_data(expand_user(data) if isinstance(data, str) else data, **settings)


SWEEP_OPTIONS = {
    "seeds": dataclasses.field(default=1, metadata={
        "help": "runs per point with train.seed, +1, …: the table gives mean ± spread"}),
    "eval_data": dataclasses.field(default=None, metadata={
        "help": "held-out rows scored after each point (see %lora eval)"}),
    "metric": dataclasses.field(default="exact_match", metadata={
        "help": "the eval score: exact_match, contains, token_accuracy, or a notebook function"}),
    "output_dir": dataclasses.field(default=None, metadata={
        "help": "the sweep's folder, new or empty (default runs/sweep-<date-time>)"}),
}
SWEEP_KEYS = {**{k: f for k, f in LORA_KEYS.items() if k != "seed"},
              **{k: f for k, f in TRAIN_KEYS.items() if k != "resume"}, **SWEEP_OPTIONS}


# Settings a sweep gives every point whole: a column mapping (a:b,c:d) and a list of trackers.
ONE_VALUE = ("columns", "report_to")


def _sweep_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--background", action="store_true", help="sweep in a thread: the kernel stays free, Stop works")


@verb("sweep", "train one fresh adapter per combination of settings on the loaded base: one chart, one table, "
      "best row marked", "%lora sweep r=4,8,16 targets=attention,all-linear steps=50 eval_data=test.jsonl",
      _sweep_flags, "settings", SWEEP_KEYS)
def _sweep(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    grid = {}
    for item in args.settings:
        if "=" not in item:
            raise UsageError(f"%lora sweep: expected key=v1,v2,…, got {item!r}")
        key, raw = item.split("=", 1)
        if key not in SWEEP_KEYS:
            raise ConfigError(key, problem="unknown setting", allowed=SWEEP_KEYS)
        if key in ONE_VALUE:  # commas inside it are the value's own, as in %lora train
            grid[key] = read_value(raw, m.shell.user_ns)
            continue
        values = comma_values(key, raw, m.shell.user_ns)
        if len(values) == 1:  # one value for every point; a list (targets=[q_proj,v_proj]) is one value too
            values = values[0] if key in SWEEP_OPTIONS or key == "data" or not isinstance(values[0], list) else values
        grid[key] = values
    for key in ("data", "eval_data", "output_dir"):
        if isinstance(grid.get(key), str):
            grid[key] = expand_user(grid[key])
    result = m.session.sweep(live=m.in_kernel(), background=args.background, **grid)
    return None if args.background or m.in_kernel() else result


@verb("wait", "block until the background run ends", "%lora wait")
def _wait(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    return m.session.wait()


@verb("stop", "stop the background run after its current step (adapter kept)", "%lora stop", libraries=False)
def _stop(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> None:
    m.session.stop()
    print("stopping after the current step…")
