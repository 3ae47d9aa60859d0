"""TRL's SFTTrainer, built on the tokenised rows of the previous run where nothing that shapes them changed.

"Tweak a setting and rerun" is the notebook's loop; TRL tokenises the whole dataset again on every
call (``SFTTrainer._prepare_dataset``: seconds to minutes on real data). The rows a run trained on
are kept, one set per kernel, under a key made of everything their tokenising read: the converted
rows (datasets' content fingerprints), the tokenizer (its class, name, vocabulary size, special
tokens and chat template), the SFTConfig fields TRL's preparation reads, and TRL's version. A rerun
with the same key hands them to TRL with ``dataset_kwargs={"skip_prepare_dataset": True}`` (TRL's
public switch for data prepared in advance); any other change tokenises afresh.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from typing import Any, Optional, Sequence

from ..core.progress import ticking
from ..data.prepare import LARGE_ROWS

# The SFTConfig fields TRL's dataset preparation reads (trl.trainer.sft_trainer, 1.9 to 1.16).
PREPARATION_FIELDS = ("max_length", "packing", "packing_strategy", "padding_free", "assistant_only_loss",
                      "completion_only_loss", "dataset_text_field", "truncation_mode", "shuffle_dataset", "seed",
                      "eos_token", "pad_token", "chat_template_path", "dataset_kwargs")

_kept: dict[str, tuple[Any, Any]] = {}


def preparation_key(train: Any, eval: Any, tokenizer: Any, config: Any) -> Optional[str]:
    """The key of the tokenised rows ``train``/``eval`` (lora_nb's converted rows) become under
    ``tokenizer`` and ``config`` (an SFTConfig); None where it cannot be told (rows without a
    datasets fingerprint, or a ``dataset_kwargs`` of the user's own).

    Example:
        >>> from trl import SFTConfig
        >>> from lora_nb.data.prepare import prepare
        >>> rows, where = prepare("train.jsonl", tok)[0], dict(output_dir="out", use_cpu=True)
        >>> key = preparation_key(rows, None, tok, SFTConfig(max_length=64, **where))
        >>> again = prepare("train.jsonl", tok)[0]  # the same rows, read again
        >>> key == preparation_key(again, None, tok, SFTConfig(max_length=64, **where))
        True
        >>> key == preparation_key(rows, None, tok, SFTConfig(max_length=128, **where))
        False
    """
    import trl

    fingerprint = getattr(train, "_fingerprint", None)
    if fingerprint is None or getattr(config, "dataset_kwargs", None):
        return None
    parts = [fingerprint, None if eval is None else getattr(eval, "_fingerprint", id(eval)), trl.__version__,
             type(tokenizer).__name__, getattr(tokenizer, "name_or_path", None), len(tokenizer),
             getattr(tokenizer, "chat_template", None), sorted(getattr(tokenizer, "special_tokens_map", {}).items()),
             [(name, getattr(config, name, None)) for name in PREPARATION_FIELDS]]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def build_trainer(model: Any, config: Any, train: Any, eval: Any, tokenizer: Any,
                  callbacks: Sequence[Any]) -> tuple[Any, bool]:
    """``SFTTrainer(model, config, train, eval, tokenizer, callbacks)``, reusing the previous run's
    tokenised rows where :func:`preparation_key` is unchanged; returns it and whether it did.

    Example:
        >>> from trl import SFTConfig
        >>> from lora_nb.data.prepare import prepare
        >>> adapted = lora_nb.inject(lora_nb.load("my-model")[0], r=4, verbose=False)
        >>> rows, config = prepare("train.jsonl", tok)[0], SFTConfig(output_dir="out", max_length=64, use_cpu=True)
        >>> forget()
        >>> [build_trainer(adapted, config, rows, None, tok, [])[1] for _ in range(2)]
        [False, True]
    """
    from trl import SFTTrainer

    key = preparation_key(train, eval, tokenizer, config)
    reused = key is not None and key in _kept
    if reused:
        train, eval = _kept[key]
        config.dataset_kwargs = {"skip_prepare_dataset": True}
    shown = ticking(f"tokenising {len(train):,} rows (TRL)") if len(train) >= LARGE_ROWS and not reused \
        else nullcontext()
    try:
        with shown:
            trainer = SFTTrainer(model=model, args=config, train_dataset=train, eval_dataset=eval,
                                 processing_class=tokenizer, callbacks=list(callbacks))
    finally:
        if reused:
            config.dataset_kwargs = None
    if key is not None:
        _kept.clear()  # one set per kernel: the last run's
        _kept[key] = (trainer.train_dataset, trainer.eval_dataset)
    return trainer, reused


def forget() -> None:
    """Drop the kept tokenised rows (their memory is freed with them).

    Example:
        >>> forget()
    """
    _kept.clear()
