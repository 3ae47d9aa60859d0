"""The demo's synthetic instruction task: say whether a number is even or odd.

A rule, not a lookup: the held-out numbers never appear in training, so exact-match accuracy on
them measures whether the adapter learned to read the last digit. A randomly initialised model
scores about 0; a few hundred LoRA steps on two CPU cores bring it close to 1.

Example:
    >>> rows = examples(3, seed=0)
    >>> sorted(rows[0])
    ['input', 'instruction', 'output']
"""

from __future__ import annotations

import random
from typing import Iterator

INSTRUCTIONS = (
    "Is this number even or odd?",
    "Tell me whether the number is even or odd.",
    "Even or odd?",
)


def _row(rng: random.Random, n: int) -> dict[str, str]:
    return {"instruction": rng.choice(INSTRUCTIONS), "input": str(n), "output": "even" if n % 2 == 0 else "odd"}


def examples(count: int, seed: int, numbers: range = range(10, 100_000)) -> list[dict[str, str]]:
    """``count`` alpaca-style rows ``{"instruction", "input", "output"}`` drawn with ``seed``.

    Example:
        >>> examples(1, seed=1)[0]["output"] in ("even", "odd")
        True
    """
    rng = random.Random(seed)
    return [_row(rng, rng.choice(numbers)) for _ in range(count)]


def split(train: int = 2000, test: int = 100, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train and held-out rows with no number in common.

    Example:
        >>> tr, te = split(50, 10)
        >>> not {r["input"] for r in tr} & {r["input"] for r in te}
        True
    """
    rows = examples(train + test * 3, seed)
    test_rows = examples(test * 3, seed + 1)
    seen = {r["input"] for r in rows[:train]}
    held = [r for r in test_rows if r["input"] not in seen][:test]
    return rows[:train], held


def corpus() -> Iterator[str]:
    """Text the demo tokenizer is trained on: the task's words plus plain English filler.

    Example:
        >>> next(iter(corpus()))
        'Is this number even or odd?'
    """
    yield from INSTRUCTIONS
    yield from ("even", "odd", "0123456789")
    yield (
        "The quick brown fox jumps over the lazy dog. A low-rank adapter learns a small update to a frozen "
        "model: the product of two thin matrices, scaled by alpha over r. What is the capital of France? "
        "Write a short poem about the sea. Hello, how are you today? Explain LoRA in one sentence."
    )
    for row in examples(500, seed=123):
        yield f"{row['instruction']}\n\n{row['input']}\n{row['output']}"
