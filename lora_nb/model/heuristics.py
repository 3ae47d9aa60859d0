"""A starting recipe from the task, the data size and the GPU, each choice explained.

:func:`suggest` turns the study guide's rules of thumb (rank by task, alpha = 2·r, dropout by data
size, targets by architecture) and the memory estimator into a :class:`~lora_nb.recipe.schema.Recipe`
whose ``reasons`` say why each setting has its value; ``recipe.to_yaml()`` writes them as
comments. Where this project measured otherwise than the guide, the rule follows the measurement
(``notebooks/learn/``): the guide's rank multiplier for larger models is left out.
"""

from __future__ import annotations

from typing import Any, Optional

from .discovery import smallest_dimension, task_type
from ..core.errors import ConfigError, check_positive, strict_flags
from .memory import GIB, count_memory, model_and_report
from ..recipe.schema import Recipe

TASKS = ("instruction", "classification", "domain")
# rank by task, as the guide's recommend_rank (simple 4 / medium 16 / complex 32), with classification at 8:
# its adapter must also carry a task head's features and the measured cost of 8 over 4 is a few thousand parameters
RANK = {"classification": (8, "a label or class needs few directions"),
        "instruction": (16, "following a format and a style: the guide's medium task"),
        "domain": (32, "new vocabulary and facts need more directions than a format")}
EFFECTIVE_BATCH = 16
BATCHES = (8, 4, 2, 1)


@strict_flags
def suggest(model: Any, *, task: str = "instruction", rows: Optional[int] = None, gpu_gb: Optional[float] = None,
            max_length: int = 1024, trust_remote_code: bool = False) -> Recipe:
    """A recipe to start from for fine-tuning ``model`` (a Hub name, folder, config or loaded model).

    ``task``: "instruction" (chat, instructions), "classification" (a label per example) or
    "domain" (new vocabulary and facts). ``rows``: the training examples (sets dropout, epochs,
    rank and the held-out share). ``gpu_gb``: the GPU's memory; without it, this machine's GPU,
    if any. The model is not loaded: its config is read on the meta device.

    Example:
        >>> import transformers
        >>> llama_7b = transformers.LlamaConfig(name_or_path="meta-llama/Llama-2-7b-hf")   # or the name itself
        >>> recipe = suggest(llama_7b, task="instruction", rows=5000, gpu_gb=12)
        >>> recipe.model.quant, recipe.lora.r, recipe.lora.alpha
        ('4bit', 16, 32)
        >>> print(recipe.reasons["model.quant"])  # doctest: +ELLIPSIS
        LoRA in bf16 needs 14.7 GiB even at batch 1 with checkpointing > 12 GiB; 4-bit (QLoRA) needs 10.0 GiB ...
    """
    if task not in TASKS:
        raise ConfigError("task", task, allowed=TASKS)
    if rows is not None:
        check_positive("rows", rows, of="examples")
    if gpu_gb is not None:
        check_positive("gpu_gb", gpu_gb, whole=False, of="GiB")
    name = model if isinstance(model, str) else getattr(model, "name_or_path", "") or ""
    if not name:
        raise ConfigError("model", type(model).__name__, problem="has no name for the recipe: pass a Hub name or "
                          "folder, or a config with name_or_path set")
    meta, report = model_and_report(model, 16, trust_remote_code)
    reasons: dict[str, str] = {}
    recipe = Recipe.from_dict({"model": {"name": str(name)}})
    recipe.model.trust_remote_code = trust_remote_code

    targets = "attention" if task == "classification" and report.names("attention") else "all-linear"
    recipe.lora.targets = targets
    picked = report.names(targets)
    short = sorted({n.rsplit(".", 1)[-1] for n in picked})
    head = " (PEFT trains the classifier head in full)" if task_type(meta) == "SEQ_CLS" else ""
    reasons["lora.targets"] = (
        f"{targets} ({', '.join(short)}): " + (f"the guide adapts attention for classification{head}"
                                              if targets == "attention" else
                                              "every linear layer, attention and MLP: the QLoRA paper needed all "
                                              "of them to match full fine-tuning"))

    r, why = RANK[task]
    scaled = ""
    if rows is not None and rows < 1000:
        r, scaled = max(4, r // 2), f"; halved for {rows} rows (few examples fit few directions)"
    elif rows is not None and rows >= 100_000:
        r, scaled = r * 2, f"; doubled for {rows:,} rows"
    smallest = smallest_dimension({m.name: (m.in_features, m.out_features) for m in report.modules if m.name in picked})
    capped = ""
    while smallest is not None and r >= smallest[1] and r > 1:
        r //= 2
        capped = f"; kept below the smallest adapted dimension ({smallest[1]})"
    recipe.lora.r, recipe.lora.alpha = r, 2 * r
    reasons["lora.r"] = (f"{task}: {RANK[task][0]}, {why}{scaled}{capped}. Not scaled up with model size as the "
                         "guide does: larger models need no larger rank (their intrinsic dimension is lower, "
                         "Aghajanyan et al. 2020)")
    reasons["lora.alpha"] = ("2·r, the guide's rule: alpha/r stays 2 whatever the rank, so a learning rate carries "
                             "over between ranks")

    if rows is None:
        reasons["lora.dropout"] = "the default: rows not given"
    else:
        recipe.lora.dropout = 0.1 if rows < 1000 else 0.05 if rows < 10_000 else 0.01
        reasons["lora.dropout"] = f"{rows:,} rows: " + ("under 1,000, more regularisation" if rows < 1000 else
                                                        "1,000–10,000" if rows < 10_000 else
                                                        "10,000 or more, little needed")
        recipe.train.epochs = 3 if rows < 1000 else 2 if rows < 10_000 else 1
        reasons["train.epochs"] = (f"{rows:,} rows: " + ("few examples need several passes" if rows < 10_000 else
                                                         "one pass; more tends to memorise"))
        if rows >= 50:
            recipe.data.eval = 0.1 if rows < 10_000 else 0.02
            reasons["data.eval"] = (f"{round(rows * recipe.data.eval):,} rows held out to tell learning from "
                                    "memorising")
        else:
            reasons["data.eval"] = (f"{rows} rows are too few to hold some out: evaluate on a separate file "
                                    "(data.eval: path)")

    big = report.total_params >= 20e9
    recipe.train.lr = 1e-4 if big else 2e-4
    reasons["train.lr"] = (f"{recipe.train.lr:g}: LoRA's usual start; the QLoRA paper used "
                           + ("1e-4 for its 33B and 65B models" if big else "2e-4 up to 13B") + "; "
                           "small models often take up to 1e-3 (a short lr sweep tells)")
    recipe.train.max_length = max_length
    _fit(recipe, meta, report, gpu_gb, reasons)
    recipe.reasons = reasons
    return recipe


def _fit(recipe: Recipe, meta: Any, report: Any, gpu_gb: Optional[float], reasons: dict) -> None:
    """Quantisation, batch and checkpointing: the first that the estimator says fits, LoRA before QLoRA."""
    if gpu_gb is None:
        import torch

        if torch.cuda.is_available():
            gpu_gb = torch.cuda.get_device_properties(0).total_memory / GIB
        else:
            reasons["model.quant"] = "not checked against memory: no gpu_gb given and no GPU here"
            return
    memory = gpu_gb * GIB
    tried = []
    for quant in (None, "4bit"):
        for checkpointing in (False, True):
            for batch in BATCHES:
                need = count_memory(report, meta, quant=quant, dtype="auto", r=recipe.lora.r,
                                    targets=recipe.lora.targets, batch_size=batch, max_length=recipe.train.max_length,
                                    gradient_checkpointing=None, device="gpu").total(checkpointing)
                what = "4-bit (QLoRA)" if quant else "LoRA in bf16"
                if need <= memory:
                    setting = (f"{what} needs {need / GIB:.1f} GiB at batch {batch}"
                               + (" with gradient checkpointing" if checkpointing else ""))
                    recipe.model.quant = quant
                    recipe.train.batch_size, recipe.train.grad_accum = batch, max(1, EFFECTIVE_BATCH // batch)
                    recipe.train.gradient_checkpointing = checkpointing
                    reasons["model.quant"] = "; ".join(tried + [f"{setting} ≤ {gpu_gb:g} GiB"])
                    reasons["train.batch_size"] = f"the largest of {', '.join(map(str, BATCHES))} that fits"
                    reasons["train.grad_accum"] = (f"batch {batch} × {recipe.train.grad_accum} = an effective batch of "
                                                   f"{batch * recipe.train.grad_accum}")
                    reasons["train.gradient_checkpointing"] = ("needed to fit: about 1.3× the step time"
                                                               if checkpointing
                                                               else "not needed: it fits without, at full speed")
                    return
            if checkpointing:
                tried.append(f"{what} needs {need / GIB:.1f} GiB even at batch 1 with checkpointing > {gpu_gb:g} GiB")
    raise ConfigError("gpu_gb", gpu_gb, problem=f"is too small for {recipe.model.name} at max_length "
                      f"{recipe.train.max_length}: {tried[-1]}; a larger GPU, a shorter max_length or a smaller model")
