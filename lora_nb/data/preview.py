"""What training sees of the data: TRL's own tokenisation and loss mask of a few examples
(:func:`preview`, ``lora_nb.preview``), of whole datasets for evaluation (:func:`trl_prepare`), and the
length of every example (:func:`token_lengths`, which the memory estimate reads).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional, Union

from ..core.quiet import quietly
from .prepare import prepare, read

_STAND_INS: dict = {}
# The output_dir a stand-in trainer's config names: never made (_trainer puts a temporary folder there).
STAND_IN = "lora_nb-stand-in"


class Preview:
    """Tokenised examples with the tokens that carry loss marked: highlighted in notebooks,
    ``[[in double brackets]]`` in terminals.

    Example:
        >>> print(preview("train.jsonl", tok, n=1))
        format: alpaca; [[…]] carries loss
        ---
        <|user|>
        Tell me whether the number is even or odd.
        <BLANKLINE>
        50504<|end|>
        <|assistant|>
        [[even<|end|>]]
    """

    def __init__(self, rows: list[list[tuple[str, bool]]], fmt: str) -> None:
        self.rows, self.format = rows, fmt

    def loss_text(self, i: int) -> str:
        """The text of example ``i``'s loss-carrying tokens: what training learns from it.

        Example:
            >>> Preview([[("2+2=", False), ("4", True), ("</s>", True)]], "prompt_completion").loss_text(0)
            '4</s>'
        """
        return "".join(t for t, loss in self.rows[i] if loss)

    def __str__(self) -> str:
        return "\n---\n".join([f"format: {self.format}; [[…]] carries loss", *map(bracketed, self.rows)])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))  # a terminal or a console without HTML shows the text form

    def _repr_html_(self) -> str:
        import html

        def span(token: str, loss: bool) -> str:
            style = "background:#c8f7c5;font-weight:bold" if loss else "color:#888"
            return f"<span style='{style}'>{html.escape(token)}</span>"

        blocks = "".join("<pre style='white-space:pre-wrap;border:1px solid #ddd;padding:4px'>"
                         f"{''.join(span(t, loss) for t, loss in row)}</pre>"
                         for row in self.rows)
        return (f"<div><b>format: {html.escape(self.format)}</b> — <span style='background:#c8f7c5'>highlighted</span> "
                f"tokens carry loss{blocks}</div>")



def bracketed(tokens: list[tuple[str, bool]]) -> str:
    """The tokens' text with each run of tokens that carry loss in ``[[…]]``.

    Example:
        >>> bracketed([("2+2=", False), ("4", True), ("</s>", True)])
        '2+2=[[4</s>]]'
    """
    text, inside = "", False
    for token, loss in tokens:
        if loss != inside:
            text += "[[" if loss else "]]"
            inside = loss
        text += token
    return text + ("]]" if inside else "")

@quietly()
def preview(data: Any, tokenizer: Any, *, n: int = 3, format: Optional[str] = None, split: str = "train",
            max_length: int = 1024, columns: Optional[Union[dict, str]] = None,
            train_on: Optional[str] = None) -> Preview:
    """The first ``n`` examples as training will see them: TRL's own tokenisation and loss mask
    (``columns``: ``data.columns``, the data's columns under lora_nb's names; ``train_on``: data.train_on;
    :func:`lora_nb.data.check` explains it turn by turn).

    Example:
        >>> print(preview([{"prompt": "2+2=", "completion": "4"}], tok))
        format: prompt_completion; [[…]] carries loss
        ---
        2+2=[[4<|end|>]]
    """
    from ..hf.compat import sft_config
    from ..hf.formats import loss_flags

    rows = read(data, split)
    rows = rows.select(range(min(n, len(rows))))
    train, _, fmt = prepare(rows, tokenizer, format=format, max_length=max_length, columns=columns,
                            train_on=train_on)
    config = sft_config(dict(output_dir=STAND_IN, report_to="none", max_length=max_length, bf16=False,
                             **loss_flags(train.column_names, train_on), dataset_num_proc=None))
    out = [[(tokenizer.decode([i]), label != -100) for i, label in zip(ids, labels)]
           for ids, labels in trl_prepare(train, tokenizer, config)]
    return Preview(out, fmt)


def trl_prepare(dataset: Any, tokenizer: Any, config: Any) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example, as a trainer built with ``config`` sees them: TRL's own
    tokenisation, chat template and loss mask, with -100 where a token carries no loss.

    Through TRL's public interface only: a real ``SFTTrainer`` prepares ``dataset`` for a stand-in
    model (one layer of width 8 with the tokenizer's vocabulary: no model of the user's is touched),
    and its own data collator turns each prepared example into labels — whichever of the two builds
    them in the installed release (the collator from TRL 1.0, the dataset since). The random state
    is left as it was (a trainer seeds it).

    Example:
        >>> from datasets import Dataset
        >>> from lora_nb.hf.compat import sft_config
        >>> config = sft_config(dict(output_dir="o", report_to="none", bf16=False, max_length=None))
        >>> [(ids, labels)] = trl_prepare(Dataset.from_list([{"prompt": "2+2=", "completion": "4"}]),
        ...                               tok, config)
        >>> [i for i, label in zip(ids, labels) if label != -100] == ids[-2:]
        True
    """
    trainer = _trainer(dataset, tokenizer, config)
    prepared = []
    for example in trainer.train_dataset:
        labels = trainer.data_collator([example])["labels"][0]
        prepared.append((list(example["input_ids"]), labels[:len(example["input_ids"])].tolist()))
    return prepared


@quietly()
def token_lengths(data: Any, tokenizer: Any, *, max_length: int, format: Optional[str] = None,
                  split: str = "train", columns: Optional[Union[dict, str]] = None) -> list[tuple[int, int]]:
    """The tokens of each training example of ``data`` as TRL tokenises it (chat template, EOS),
    cut at ``max_length`` as TRL cuts it — what the collator pads a batch to the longest of — each
    with how many of them carry loss (a completion's or the assistant's; every token of text).
    Tokenises the whole dataset, as training would (about 30 s for 100,000 rows here).

    Example:
        >>> token_lengths([{"text": "hello world"}, {"text": "hi"}], tok, max_length=1024)
        [(9, 9), (3, 3)]
    """
    from ..hf.compat import sft_config

    train, _, _ = prepare(data, tokenizer, format=format, split=split, max_length=max_length, columns=columns)
    config = sft_config(dict(output_dir=STAND_IN, report_to="none", max_length=max_length, bf16=False,
                             assistant_only_loss="messages" in train.column_names, dataset_num_proc=None))
    prepared = _trainer(train, tokenizer, config).train_dataset
    lengths = [len(ids) for ids in prepared["input_ids"]]
    mask = next((c for c in ("completion_mask", "assistant_masks") if c in prepared.column_names), None)
    labelled = [sum(m) for m in prepared[mask]] if mask else lengths
    return list(zip(lengths, labelled))


def _trainer(dataset: Any, tokenizer: Any, config: Any) -> Any:
    """A real ``SFTTrainer`` that has prepared ``dataset`` for a stand-in model, the random state kept.
    It writes nothing, but transformers' Trainer makes its ``output_dir``: a temporary folder, removed
    at once, so no empty folder is left where the user works."""
    import tempfile

    from trl import SFTTrainer

    with _random_state_kept(), tempfile.TemporaryDirectory(prefix="lora_nb-prepare-") as out:
        config.output_dir = out
        return SFTTrainer(model=_stand_in(len(tokenizer)), args=config, train_dataset=dataset,
                          processing_class=tokenizer)


def _stand_in(vocab_size: int) -> Any:
    """The smallest causal LM with ``vocab_size`` tokens, built once per size (about a second)."""
    if vocab_size not in _STAND_INS:
        import transformers as tf

        config = tf.LlamaConfig(vocab_size=vocab_size, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                num_attention_heads=1, num_key_value_heads=1)
        _STAND_INS[vocab_size] = tf.LlamaForCausalLM(config)
    return _STAND_INS[vocab_size]


@contextmanager
def _random_state_kept() -> Iterator[None]:
    import random

    import numpy as np
    import torch

    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        yield
    random.setstate(python)
    np.random.set_state(numpy)
