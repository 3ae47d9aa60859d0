"""Generate answers, and compare base and adapter answers from one model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from .errors import ConfigError
from .render import html_table, text_table

MAX_NEW_TOKENS = 128  # the answer length when a caller does not say


def _encode(tokenizer: Any, prompts: list[str]):
    if getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return tokenizer(prompts, return_tensors="pt", padding=True)


def generate(model: Any, tokenizer: Any, prompts: Union[str, list[str]], **generation_kwargs: Any) -> Union[str, list[str]]:
    """Answer ``prompts`` (one string, or a list answered as a batch).

    Uses the tokenizer's chat template when it has one (the prompt becomes a user turn), else the
    raw text. Greedy with ``max_new_tokens=128`` unless ``generation_kwargs`` say otherwise.
    Returns the new text only, special tokens removed.

    Example:
        >>> generate(model, tok, "Is 12 even or odd?")   # doctest: +SKIP
        'even'
    """
    import torch

    single = isinstance(prompts, str)
    batch = [prompts] if single else list(prompts)
    if not batch or not all(isinstance(p, str) for p in batch):
        raise ConfigError("prompts", prompts, problem="must be a string or a non-empty list of strings")
    kwargs = dict(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    kwargs.update(generation_kwargs)
    from .portable import pin_4bit_layout
    from .runs import training_run

    busy = training_run(model)
    if busy is not None:  # generating would switch the training model to eval mode mid-step
        raise ConfigError("model", problem=f"is training in run {busy.name}: stop it (run.stop(), %lora stop) or wait "
                          "for it (run.wait(), %lora wait) before generating")
    pin_4bit_layout(model)  # inference must not repack 4-bit weights on AVX512-BF16 CPUs (see there)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # decoder-only models continue from the right edge
    was_training = model.training
    try:
        inputs = _encode(tokenizer, batch).to(model.device)
        model.eval()
        with torch.no_grad():
            out = model.generate(**inputs, **kwargs)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    answers = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    answers = [a.strip() for a in answers]
    return answers[0] if single else answers


@dataclass
class Comparison:
    """Base and adapter answers to the same prompts, side by side.

    Example:
        >>> cmp = compare(model, tok, ["Is 7 even or odd?"])   # doctest: +SKIP
        >>> cmp.rows[0]                                         # doctest: +SKIP
        ('Is 7 even or odd?', 'the the the', 'odd')
    """

    rows: list[tuple[str, str, str]]

    _HEADERS = ["prompt", "base", "adapter"]

    def __str__(self) -> str:
        return text_table(self._HEADERS, self.rows)

    def _repr_html_(self) -> str:
        return html_table(self._HEADERS, self.rows).replace("<td>", "<td style='white-space:pre-wrap;text-align:left;vertical-align:top'>")


def compare(model: Any, tokenizer: Any, prompts: Union[str, list[str]], **generation_kwargs: Any) -> Comparison:
    """Answers from the base model (adapter disabled) and with the adapter, from the same model.

    Example:
        >>> compare(model, tok, ["Is 12 even or odd?", "Even or odd? 7"])   # doctest: +SKIP
    """
    if not hasattr(model, "disable_adapter"):
        raise ConfigError("model", type(model).__name__, problem="has no adapter to compare; call lora_nb.inject or load_adapter first")
    batch = [prompts] if isinstance(prompts, str) else list(prompts)
    with model.disable_adapter():
        base = generate(model, tokenizer, batch, **generation_kwargs)
    tuned = generate(model, tokenizer, batch, **generation_kwargs)
    return Comparison(list(zip(batch, base, tuned)))
