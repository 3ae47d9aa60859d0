"""Tiny models built from transformers configs, with a tokenizer trained locally.

The demo and the tests need real Hugging Face models without the Hub. These builders make them
from configs in a second or two, save them with ``save_pretrained`` (safetensors) and cache the
folder, so every later ``lora_nb.load(folder)`` goes through the same ``from_pretrained`` path a
Hub model does.

Example:
    >>> from lora_nb.demo.tiny import tiny_model
    >>> path = tiny_model("llama")
    >>> model, tok = lora_nb.load(path)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from ..core.files import cache_dir
from ..core.quiet import captured

# A minimal chat template. The assistant turn sits inside {% generation %} so TRL can mask the
# loss to the answer, and <|end|> closes every turn so the model learns to stop.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}\n"
    "{% else %}{{ message['content'] }}<|end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]

FAMILIES = ("llama", "gpt2", "phi3", "qwen3_moe", "bert")



def _corpus() -> Iterable[str]:
    from .tasks import corpus

    yield from corpus()


def build_tokenizer(folder: Path, texts: Iterable[str] | None = None, vocab_size: int = 600):
    """Train a byte-level BPE tokenizer on ``texts`` (the demo task's corpus by default).

    Digits are split one per token so numbers are read digit by digit. The result is a
    ``PreTrainedTokenizerFast`` with a chat template, saved to ``folder``.

    Example:
        >>> tok = build_tokenizer(Path("tok"))
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts if texts is not None else _corpus(), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    return tok


def _config(family: str, vocab_size: int, size: str):
    import transformers as tf

    hidden, layers, inter = (64, 2, 256) if size == "demo" else (32, 2, 64)
    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if size == "demo":  # a wider init lets a frozen random lm_head still give confident answers
        common["initializer_range"] = 0.1
    if family == "llama":
        return tf.LlamaConfig(
            hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False, **common,
        )
    if family == "gpt2":
        return tf.GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=256, **common)
    if family == "phi3":
        return tf.Phi3Config(
            hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=256, **common,
        )
    if family == "qwen3_moe":
        return tf.Qwen3MoeConfig(
            hidden_size=hidden, intermediate_size=inter, moe_intermediate_size=inter // 2, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, num_experts=4,
            num_experts_per_tok=2, max_position_embeddings=256, decoder_sparse_step=1, **common,
        )
    if family == "bert":
        return tf.BertConfig(
            hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=4,
            max_position_embeddings=256, num_labels=2, **common,
        )
    raise ValueError(f"family={family!r} is not one of {', '.join(FAMILIES)}")


def _cached(folder: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temporary sibling and rename, so an interrupted build never leaves half a folder."""
    if (folder / "config.json").exists() or (folder / "tokenizer.json").exists():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    with captured():  # a second's work: no "Writing model shards" bar, no "saved in" lines
        build(tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def tiny_tokenizer() -> Path:
    """The cached demo tokenizer's folder, trained on first use (about a second).

    Example:
        >>> from transformers import AutoTokenizer
        >>> tok = AutoTokenizer.from_pretrained(tiny_tokenizer())
    """
    return _cached(cache_dir() / "tokenizer", lambda p: build_tokenizer(p))


def tiny_model(family: str = "llama", size: str = "tiny", seed: int = 0) -> Path:
    """A folder holding a randomly initialised model of ``family`` and the demo tokenizer.

    ``family`` is one of ``llama``, ``gpt2`` (Conv1D layers), ``phi3`` (fused qkv and gate_up),
    ``qwen3_moe`` (mixture of experts) or ``bert`` (encoder with a classifier head); ``size`` is
    ``"tiny"`` (hidden 32, 2 layers: for tests) or ``"demo"`` (hidden 64, 2 layers, wider init). Built once
    and cached under :func:`cache_dir`.

    Example:
        >>> path = tiny_model("gpt2")
        >>> model, tok = lora_nb.load(path)
    """
    from transformers import AutoTokenizer

    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not one of {', '.join(FAMILIES)}")

    def build(folder: Path) -> None:
        import torch
        import transformers as tf

        tok = AutoTokenizer.from_pretrained(tiny_tokenizer())
        config = _config(family, len(tok), size)
        torch.manual_seed(seed)
        if family == "bert":
            model = tf.BertForSequenceClassification(config)
        else:
            model = tf.AutoModelForCausalLM.from_config(config)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)

    return _cached(cache_dir() / f"{family}-{size}-{seed}", build)
