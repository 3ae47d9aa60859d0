"""Verbs of the answering step: ``%lora generate``, ``%lora eval``, ``%lora compare``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Optional

from IPython.core.error import UsageError

from .arguments import given
from .magic import LoraMagics
from .registry import verb


def _prompt(args: argparse.Namespace, cell: Optional[str], what: str) -> str:
    if cell is not None:
        return cell.rstrip("\n")
    if not args.settings:
        raise UsageError(f'%lora {what} needs a prompt: %lora {what} "your prompt" (or a %%lora {what} cell)')
    return " ".join(args.settings)


def _gen_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=None, help="answer length (default: generate's)")


@verb("generate", "answer a prompt with the current model", '%lora generate "Is 7 even or odd?"', _gen_flags, "prompt")
def _generate(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> None:
    print(m.session.generate(_prompt(args, cell, "generate"), **given(max_new_tokens=args.max_new_tokens)))


EVAL_HELP = {
    "data": "held-out rows with reference answers: a file, a Hub dataset or a notebook variable, "
            "in any format training reads",
    "metric": "exact_match, contains, token_accuracy, or a notebook function (prediction, reference) -> score",
    "limit": "score only the first N rows",
    "max_new_tokens": "answer length (default: the longest reference's tokens + 8)",
    "batch_size": "rows answered at once",
    "columns": "the data's own column names, as in %lora train (question:instruction,answer:output)",
}


def _eval_keys() -> dict[str, dataclasses.Field]:
    """evaluate()'s keywords as fields (default from its signature, help above): one definition."""
    import inspect

    from ...inference.evaluation import evaluate

    params = inspect.signature(evaluate).parameters
    return {key: dataclasses.field(default="" if key == "data" else params[key].default, metadata={"help": text})
            for key, text in EVAL_HELP.items()}


EVAL_KEYS = _eval_keys()


@verb("eval", "score the model on held-out rows (the score is kept with the run that trained the adapter)",
      "%lora eval data=test.jsonl metric=exact_match limit=100", free="settings", keys=EVAL_KEYS)
def _eval(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    settings = m.settings(args.settings, EVAL_KEYS)
    if "data" not in settings:
        raise UsageError("%lora eval needs data=PATH "
                         "(held-out rows with answers: a file, a Hub dataset, or a notebook variable)")
    return m.session.evaluate(settings.pop("data"), **settings)


def _compare_flags(p: argparse.ArgumentParser) -> None:
    _gen_flags(p)
    p.add_argument("--runs", nargs="+", default=None, metavar="RUN",
                   help="runs to compare (run folders, names under runs/, or adapter folders), one column each")


@verb("compare", "base vs adapter answers side by side (or base vs runs: --runs A B)",
      '%lora compare --runs runs/a runs/b "Is 7 even or odd?"', _compare_flags, "prompt")
def _compare(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]) -> Any:
    runs = args.runs
    if runs and cell is None and not args.settings:  # --runs A B "prompt": the prompt is the last word
        if len(runs) < 2:
            raise UsageError('%lora compare --runs RUN [RUN ...] "your prompt": name the runs, then the prompt')
        runs, args.settings = runs[:-1], runs[-1:]
    return m.session.compare([_prompt(args, cell, "compare")], **given(max_new_tokens=args.max_new_tokens, runs=runs))
