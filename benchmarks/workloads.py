"""What the cases train on and how a training run is metered: models, data, the step meter.

Models are Llama-shaped with random weights, built from a config and saved once under
:func:`cache_dir` (no download); they share one small BPE tokenizer trained locally. The data
is a deterministic synthetic instruction set whose examples spread from 16 to 512 tokens.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from transformers import TrainerCallback

from lora_nb.recipe.schema import LoraSection, TrainSection

from .common import Metrics
from .flops import model_shape, step_flops

# hidden, intermediate, layers, attention heads, kv heads, vocabulary (None: the tokenizer's), tied embeddings
SHAPES = {
    "tiny": (64, 256, 2, 4, 2, None, False),              # lora_nb's demo size: checks the path, times nothing real
    "small": (256, 768, 4, 4, 2, None, False),            # ~3M parameters: steps of a few tenths of a second
    "llama-100m": (768, 2048, 12, 12, 4, 32000, True),    # merge_generate's model
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152, True),   # SmolLM2-135M's shape
}
WORDS = ("the a of to and in is it that for on with as was at by this be from or an are not have one all model "
         "adapter rank low train loss token batch memory layer weight matrix learning rate step data even odd "
         "number seven twelve hundred quick brown fox jumps over lazy dog capital france poem sea hello how you "
         "today explain sentence write short answer question instruction response").split()
PROMPT = "### Instruction:\n{}\n\n### Response:\n"


def cache_dir() -> Path:
    """Where the benchmark models are kept: ``~/.cache/lora_nb-bench``."""
    return Path.home() / ".cache" / "lora_nb-bench"


def tokenizer_folder() -> Path:
    """The benchmark tokenizer: lora_nb's tiny BPE trained on this module's words (whole words
    become tokens, as with a real tokenizer), built on first use."""
    from lora_nb.demo.tiny import _cached, build_tokenizer

    corpus = [PROMPT.format(" ".join(WORDS))] + [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    return _cached(cache_dir() / "tokenizer", lambda folder: build_tokenizer(folder, corpus, vocab_size=1000))


def model_folder(shape: str) -> Path:
    """A saved model of ``shape`` (see :data:`SHAPES`) with the benchmark tokenizer, built on first use.

    Example:
        >>> lora_nb.load(str(model_folder("small")))   # doctest: +SKIP
    """
    from lora_nb.demo.tiny import _cached

    def build(folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

        tok = AutoTokenizer.from_pretrained(tokenizer_folder())
        hidden, inter, layers, heads, kv, vocab, tied = SHAPES[shape]
        config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab or len(tok),
                             tie_word_embeddings=tied, max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        tok.save_pretrained(folder)

    return _cached(cache_dir() / shape, build)


def instruction_rows(tokenizer: Any, count: int, lo: int = 16, hi: int = 512, seed: int = 0) -> list[dict]:
    """``count`` prompt/completion rows in the alpaca prompt style whose token counts (prompt and
    completion together) spread log-uniformly over [``lo``, ``hi``]: many short examples and a
    long tail, as in real instruction sets, which is what makes padding and batching matter.

    Example:
        >>> rows = instruction_rows(tok, 64)   # doctest: +SKIP
        >>> sorted(rows[0])                    # doctest: +SKIP
        ['completion', 'prompt']
    """
    rng = random.Random(seed)
    words = [rng.choice(WORDS) + rng.choice(["", "", "", ",", ".", f" {rng.randint(0, 9999)}"]) for _ in range(hi * 8)]
    ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    frame = len(tokenizer(PROMPT.format(""), add_special_tokens=False)["input_ids"])
    rows = []
    for _ in range(count):
        total = round(math.exp(rng.uniform(math.log(lo), math.log(hi)))) - frame
        body = max(2, total)
        start = rng.randrange(0, len(ids) - body)
        cut = max(2, int(body * rng.uniform(0.2, 0.6)))
        rows.append({"prompt": PROMPT.format(tokenizer.decode(ids[start:start + cut]).strip()),
                     "completion": tokenizer.decode(ids[start + cut:start + body]).strip()})
    return rows


def lengths(tokenizer: Any, rows: list[dict]) -> dict:
    """Token counts of ``rows`` (prompt + completion): min, median, mean, max."""
    counts = sorted(len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) for r in rows)
    return {"min": counts[0], "median": counts[len(counts) // 2], "mean": round(sum(counts) / len(counts)),
            "max": counts[-1]}


class Meter(TrainerCallback):
    """Meters a training run from inside it: the real (non-padding) tokens and the label tokens
    each forward processed, the summed loss over those labels, and the time each step ended.

    Given to both sides of a comparison (lora_nb's ``train(callbacks=...)`` and a hand-built
    SFTTrainer), it measures them the same way. ``skip`` steps are left out of the speed (the
    first steps pay one-off costs); the loss per token covers every step. Also keeps the
    trainer's settings and the model's dtype (``settings``), so two sides can be compared.
    """

    def __init__(self) -> None:
        self.tokens = self.labels = self.squared_lengths = 0
        self.nll = 0.0
        self.marks: list[tuple[float, int]] = []
        self.cpu_marks: list[tuple[float, int, int]] = []  # (CPU time, tokens, squared lengths) at each mark
        self.shape: dict = {}
        self.settings: dict = {}
        self._hook: Optional[Any] = None

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.settings = {**args.to_dict(), "dtype": str(model.dtype).removeprefix("torch.")}
        self._hook = model.register_forward_hook(self._count, with_kwargs=True)
        self.shape = model_shape(model)
        self.marks = [(time.perf_counter(), 0)]
        self.cpu_marks = [(time.process_time(), 0, 0)]

    def _count(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if not module.training:
            return
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        self.tokens += int(mask.sum()) if mask is not None else ids.numel()  # padding-free batches have no mask
        self.squared_lengths += int((mask.sum(-1) ** 2).sum()) if mask is not None else ids.numel() ** 2
        label_mask, log_probs = getattr(output, "label_mask", None), getattr(output, "log_probs", None)
        if label_mask is not None and log_probs is not None:  # TRL's fused head: per-token log-probs, 0 where ignored
            n, nll = int(label_mask.sum()), float(-log_probs.detach().sum())
        else:
            labels = kwargs["labels"]
            n = int((labels[..., 1:] != -100).sum())
            nll = float(output.loss.detach()) * n
        self.labels += n
        self.nll += nll

    def on_step_end(self, args, state, control, **kw):
        self.marks.append((time.perf_counter(), self.tokens))
        self.cpu_marks.append((time.process_time(), self.tokens, self.squared_lengths))

    def on_train_end(self, args, state, control, **kw):
        if self._hook is not None:
            self._hook.remove()

    def metrics(self, skip: int) -> Metrics:
        """tokens/s (wall and per CPU-second), seconds per step and model FLOPs per CPU-second
        (:mod:`benchmarks.flops`) over the steps after the first ``skip``; loss per label token."""
        skip = min(skip, len(self.marks) - 2)
        (t0, n0), (t1, n1) = self.marks[skip], self.marks[-1]
        steps = len(self.marks) - 1 - skip
        (c0, _, q0), (c1, _, q1) = self.cpu_marks[skip], self.cpu_marks[-1]
        flops_per_cpu_s = step_flops(self.shape, n1 - n0, q1 - q0) / (c1 - c0) if c1 > c0 else float("nan")
        return {"tokens_per_s": (n1 - n0) / (t1 - t0), "step_s": (t1 - t0) / steps,
                "tokens_per_cpu_s": (n1 - n0) / (c1 - c0) if c1 > c0 else float("nan"),
                "flops_per_cpu_s": flops_per_cpu_s,
                "loss_per_token": self.nll / self.labels if self.labels else float("nan")}

    def whole_call(self, skip: int, seconds: float, cpu_seconds: float) -> Metrics:
        """:meth:`metrics`, plus the whole call's wall time (``train_s``) and its speed in real tokens
        per CPU-second of this process (``call_tokens_per_cpu_s``: setup, data preparation and saves count)."""
        return {**self.metrics(skip), "train_s": seconds, "train_cpu_s": cpu_seconds,
                "call_tokens_per_cpu_s": self.tokens / cpu_seconds if cpu_seconds else float("nan")}


# lora_nb's default adapter (its seed defaults to train.seed), for the sides that build it with PEFT directly.
LORA = dict(r=LoraSection.r, alpha=LoraSection.alpha, dropout=LoraSection.dropout, targets=LoraSection.targets,
            seed=TrainSection.seed)


def train_with_lora_nb(folder: Path, rows: list, out: Path, skip: int, quant: Optional[str] = None,
                       callbacks: Sequence[Any] = (), **train_kwargs: Any) -> tuple[Metrics, dict]:
    """Load, inject (lora_nb's default adapter) and train with lora_nb; the run's metrics (plus
    ``train_s``, the whole ``train()`` call) and the settings it ran with (see :class:`Meter`)."""
    import lora_nb

    model, tok = lora_nb.load(str(folder), quant=quant)
    model = lora_nb.inject(model, verbose=False)
    meter = Meter()
    start, cpu = time.perf_counter(), time.process_time()
    lora_nb.train(model, tok, rows, output_dir=str(out), callbacks=[meter, *callbacks], **train_kwargs)
    return meter.whole_call(skip, time.perf_counter() - start, time.process_time() - cpu), meter.settings


def train_with_trl(folder: Path, rows: list, out: Path, skip: int, config: dict) -> tuple[Metrics, dict]:
    """The same training written by hand: ``from_pretrained``, ``get_peft_model`` with lora_nb's
    default adapter, ``SFTTrainer(args=SFTConfig(**config))``, ``train``, ``save_model``.
    ``config`` holds SFTConfig keywords and may hold ``dtype``, the model's (default float32).
    Returns what :func:`train_with_lora_nb` does."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    config = dict(config)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, config.pop("dtype", "float32")))
    torch.manual_seed(LORA["seed"])
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=LORA["targets"], task_type="CAUSAL_LM"))
    meter = Meter()
    start, cpu = time.perf_counter(), time.process_time()
    trainer = SFTTrainer(model=model, args=SFTConfig(output_dir=str(out), **config),
                         train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[meter])
    trainer.train()
    trainer.save_model()
    return meter.whole_call(skip, time.perf_counter() - start, time.process_time() - cpu), meter.settings
