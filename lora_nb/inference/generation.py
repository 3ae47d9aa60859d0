"""Generate answers, and compare base and adapter answers from one model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..core.errors import ConfigError, nearest
from ..core.quiet import quietly
from ..core.render import html_table, wrapped_table

MAX_NEW_TOKENS = 128  # the answer length when a caller does not say


def _encode(tokenizer: Any, prompts: list[str]):
    if getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True)
                 for p in prompts]
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return tokenizer(prompts, return_tensors="pt", padding=True)


@quietly()
def generate(model: Any, tokenizer: Any, prompts: Union[str, list[str]],
             **generation_kwargs: Any) -> Union[str, list[str]]:
    """Answer ``prompts`` (one string, or a list answered as a batch).

    Uses the tokenizer's chat template when it has one (the prompt becomes a user turn), else the
    raw text. Greedy with ``max_new_tokens=128`` unless ``generation_kwargs`` say otherwise.
    Returns the new text only, special tokens removed.

    Example:
        >>> answer = generate(model, tok, "Is 12 even or odd?", max_new_tokens=4)  # a trained model: 'even'
        >>> type(answer)
        <class 'str'>
    """
    import torch

    single = isinstance(prompts, str)
    batch = [prompts] if single else list(prompts)
    if not batch or not all(isinstance(p, str) for p in batch):
        raise ConfigError("prompts", prompts, problem="must be a string or a non-empty list of strings")
    check_generation_kwargs(generation_kwargs)
    kwargs = dict(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    kwargs.update(generation_kwargs)
    from ..hf.models import pin_4bit_layout
    from ..runs.busy import check_not_training

    check_not_training(model, "generating")  # generating would switch the training model to eval mode mid-step
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


def check_generation_kwargs(kwargs: dict) -> None:
    """Refuse a keyword ``model.generate`` does not take (with the nearest one), and a wrong type
    for a setting whose default is a number or a flag, before anything is generated.

    Example:
        >>> check_generation_kwargs({"max_new_tokenz": 8})   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: generate.max_new_tokenz: is not a generation setting. Allowed: ... Did you mean 'max_new_tokens'?
    """  # noqa: E501
    import inspect

    from transformers import GenerationConfig, GenerationMixin

    allowed = {k for k in GenerationConfig().to_dict() if not k.startswith("_")} | {
        n for n, p in inspect.signature(GenerationMixin.generate).parameters.items()
        if p.kind is not p.VAR_KEYWORD and n not in ("self", "inputs")}
    for key, value in kwargs.items():
        if key not in allowed:
            raise ConfigError(f"generate.{key}", problem="is not a generation setting",
                              allowed=sorted(allowed, key=lambda k: (k != nearest(key, allowed), k)))
        if key in FLAGS and not isinstance(value, bool):
            raise ConfigError(f"generate.{key}", value, problem="must be True or False")
        if key in NUMBERS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"generate.{key}", value, problem="must be a number")
    if "max_new_tokens" in kwargs and not (isinstance(kwargs["max_new_tokens"], int) and kwargs["max_new_tokens"] > 0):
        raise ConfigError("generate.max_new_tokens", kwargs["max_new_tokens"], problem="must be a whole number above 0")


# generation settings whose type transformers checks only deep in generate (or not at all)
FLAGS = {"do_sample", "use_cache", "output_scores", "output_logits", "return_dict_in_generate", "renormalize_logits"}
NUMBERS = {"max_new_tokens", "min_new_tokens", "max_length", "min_length", "temperature", "top_p", "top_k", "min_p",
           "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "num_beams",
           "num_return_sequences"}


@dataclass
class Comparison:
    """Base and adapter answers to the same prompts, side by side, with a note above when the
    answers need one (the embedded demo model's base answers are noise). ``headers``: prompt, base,
    then one column per adapter (``adapter``, or each run's name). A multi-line prompt or answer
    keeps its lines inside its row; long cells wrap to fit a notebook column.

    Characters a table cannot show (control characters, the U+FFFD of a broken byte sequence)
    are drawn as ``·``; ``rows`` keeps the answers as generated.

    Example:
        >>> peft_model = lora_nb.load_adapter("base-model", "runs/x/adapter")
        >>> cmp = compare(peft_model, tok, ["Is 7 even or odd?"], max_new_tokens=4)
        >>> prompt, base_answer, adapter_answer = cmp.rows[0]   # a trained adapter: 'odd'
        >>> prompt
        'Is 7 even or odd?'
        >>> print(Comparison([("Is 7 even?", "\\x01\\ufffdU", "odd")]))
        prompt      base  adapter
        ----------  ----  -------
        Is 7 even?  ··U   odd
    """

    rows: list[tuple[str, ...]]
    note: str = ""
    headers: list[str] = field(default_factory=lambda: ["prompt", "base", "adapter"])

    def _shown(self) -> list[list[str]]:
        return [[visible(text) for text in row] for row in self.rows]

    def __str__(self) -> str:
        return (f"{self.note}\n" if self.note else "") + wrapped_table(self.headers, self._shown())

    def _repr_html_(self) -> str:
        import html

        note = f"<p><i>{html.escape(self.note)}</i></p>" if self.note else ""
        return note + html_table(self.headers, self._shown()).replace(
            "<td>", "<td style='white-space:pre-wrap;overflow-wrap:anywhere;text-align:left;vertical-align:top;"
            f"max-width:{max(16, 90 // len(self.headers))}ch'>")


UNTRAINED = ("The embedded demo model is untrained: its base answers are random tokens. "
             "Load a pretrained model for a readable before/after.")


def visible(text: str) -> str:
    """``text`` with every character a table cannot show as ``·``: control characters (line
    breaks and tabs kept) and U+FFFD, what a decoder makes of a byte sequence that is no text.

    Example:
        >>> visible("odd\\n\\x07\\ufffd")
        'odd\\n··'
    """
    import unicodedata

    return "".join("·" if ch == "\ufffd" or (unicodedata.category(ch).startswith("C") and ch not in "\n\t") else ch
                   for ch in text)


def is_embedded(model: Any) -> bool:
    """True for a model lora_nb built itself (:mod:`lora_nb.demo.tiny`: the demo's and the tests'
    untrained models), recognised by its folder directly in lora_nb's cache (a pretrained model
    converted into ``cache/pretrained/`` is not one).

    Example:
        >>> is_embedded(object())
        False
    """
    from pathlib import Path

    from ..runs.provenance import unwrap
    from ..core.files import cache_dir

    folder = getattr(unwrap(model), "name_or_path", "") or ""
    return bool(folder) and Path(folder).resolve().parent == cache_dir().resolve()


def compare(model: Any, tokenizer: Any, prompts: Union[str, list[str]],
            runs: Optional[Sequence[Union[Any, str, Path]]] = None, **generation_kwargs: Any) -> Comparison:
    """Answers from the base model (adapter disabled) and with the adapter, from the same model.

    ``runs``: runs to compare instead of the model's own adapter — :class:`~lora_nb.runs.record.Run`
    objects, run folders or adapter folders, trained on this base. Each run's adapter is loaded
    onto the same model as a named adapter, one column each (named by its run's folder; a sweep's
    point: ``sweep-folder/point-label``), and deleted afterwards: the model's own adapter, still
    active, is untouched. A run trained on another base is refused with one line.

    Example:
        >>> peft_model = lora_nb.load_adapter("base-model", "runs/x/adapter")
        >>> cmp = compare(peft_model, tok, ["Is 12 even or odd?", "Even or odd? 7"], max_new_tokens=4)
        >>> print(cmp.note)  # doctest: +ELLIPSIS
        The embedded demo model is untrained: its base answers are random tokens. Load a pretrained model ...
        >>> compare(peft_model, tok, "Is 7 even or odd?", runs=["runs/a", "runs/b"]).headers  # doctest: +SKIP
        ['prompt', 'base', 'a', 'b']
    """
    if not hasattr(model, "disable_adapter"):
        raise ConfigError("model", type(model).__name__,
                          problem="has no adapter to compare; call lora_nb.inject or load_adapter first")
    batch = [prompts] if isinstance(prompts, str) else list(prompts)
    note = UNTRAINED if is_embedded(model) else ""
    if runs is not None:
        from .run_adapters import runs_loaded

        check_generation_kwargs(generation_kwargs)  # before any adapter is loaded
        with runs_loaded(model, runs) as loaded:
            with model.disable_adapter():
                columns = [generate(model, tokenizer, batch, **generation_kwargs)]
            for _, adapter in loaded:
                model.set_adapter(adapter)
                columns.append(generate(model, tokenizer, batch, **generation_kwargs))
        return Comparison(list(zip(batch, *columns)), note, ["prompt", "base"] + [name for name, _ in loaded])
    with model.disable_adapter():
        base = generate(model, tokenizer, batch, **generation_kwargs)
    tuned = generate(model, tokenizer, batch, **generation_kwargs)
    return Comparison(list(zip(batch, base, tuned)), note=note)
