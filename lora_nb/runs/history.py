"""A run's history: the metrics it logs each step, the memory reading among them, and reading
its JSON-lines files (``metrics.jsonl``, ``evals.jsonl``) back, torn last lines and all."""

from __future__ import annotations

from pathlib import Path

# What a run keeps of each of the trainer's logs in metrics.jsonl (evaluation metrics: inference.evaluation.METRICS)
LOGGED = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s", "mean_token_accuracy", "memory_mb")


def memory_mb() -> float:
    """Memory in use: the GPU's peak allocation when there is one, else this process's resident size.

    Example:
        >>> memory_mb() > 0
        True
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a line torn by a kill in the middle of a write is skipped.

    Example:
        >>> read_jsonl(Path("runs/20261128-101500/metrics.jsonl"))[-1]["loss"] > 0
        True
    """
    import json

    rows = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line torn by a kill mid-write
            continue
    return rows
