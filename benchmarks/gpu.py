#!/usr/bin/env python3
"""One GPU check for lora_nb: LoRA/QLoRA training throughput and memory, and lora_nb end to end on CUDA.

Cases (each a short real training run with TRL's SFTTrainer on a Qwen2.5-0.5B-shaped model with
random bf16 weights, built locally: no download):

  1-5   LoRA  (bf16 base, r=16, all-linear): TRL defaults; gradient_checkpointing=False;
        + padding_free; + use_liger_kernel; the best combination of 2-4.
  6-10  QLoRA (NF4 + double quant, bf16 compute, prepare_model_for_kbit_training): the same five.
  11    lora_nb on CUDA: load(quant="4bit") -> inject -> train -> generate -> merge on a tiny
        saved model, the same in bf16, and the demo (accuracy before/after/merged).

Per case: tokens/s (non-pad tokens), peak torch.cuda.max_memory_allocated, mean loss per label
token over the timed steps, trainable/total params, batch size, max_length, grad accumulation.
Results: <out>/gpu.json (rewritten after every case), <out>/gpu.md (the tables); the log is
whatever gpu.sh tees. ``--cpu-smoke`` runs the same code paths on the CPU with a tiny model.

Run through benchmarks/gpu.sh (see benchmarks/GPU.md).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

T0 = time.time()

# No Hub on the GPU machine (nor wanted anywhere): fail fast instead of waiting on DNS.
for _k, _v in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
               ("TOKENIZERS_PARALLELISM", "false"), ("WANDB_DISABLED", "true"),
               ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_k, _v)

QWEN_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                max_position_embeddings=32768, rms_norm_eps=1e-6)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=None, tie_word_embeddings=True,
            max_position_embeddings=1024, rms_norm_eps=1e-6)

CASES = {
    1: dict(name="LoRA, TRL defaults", quant=False, gc=None, pf=False, liger=False),
    2: dict(name="LoRA, gc off", quant=False, gc=False, pf=False, liger=False),
    3: dict(name="LoRA, gc off + padding_free", quant=False, gc=False, pf=True, liger=False),
    4: dict(name="LoRA, gc off + liger", quant=False, gc=False, pf=False, liger=True),
    5: dict(name="LoRA, best of 2-4", quant=False, gc=False, pf="best", liger="best"),
    6: dict(name="QLoRA, TRL defaults", quant=True, gc=None, pf=False, liger=False),
    7: dict(name="QLoRA, gc off", quant=True, gc=False, pf=False, liger=False),
    8: dict(name="QLoRA, gc off + padding_free", quant=True, gc=False, pf=True, liger=False),
    9: dict(name="QLoRA, gc off + liger", quant=True, gc=False, pf=False, liger=True),
    10: dict(name="QLoRA, best of 7-9", quant=True, gc=False, pf="best", liger="best"),
}
WORDS = ("the a of to and in is it that for on with as was at by this be from or an are not have one all "
         "model adapter rank low train loss token batch memory layer weight matrix learning rate step data "
         "even odd number seven twelve hundred quick brown fox jumps over lazy dog capital france poem sea "
         "hello how you today explain sentence write short answer question instruction response").split()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def first_lines(e: BaseException, n: int = 3) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return "\n".join(text[:n])[:600]


def tb_tail(n: int = 14) -> str:
    return "\n".join(traceback.format_exc().rstrip().splitlines()[-n:])


def parse_cases(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-")
            out += range(int(a), int(b) + 1)
        else:
            out.append(int(part))
    return sorted(set(out))


# ----------------------------------------------------------------------------------------- environment
def environment(cuda: bool) -> dict:
    import importlib.metadata as md

    import torch

    env: dict = {"python": sys.version.split()[0], "executable": sys.executable,
                 "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    for pkg in ("torch", "transformers", "peft", "trl", "bitsandbytes", "liger-kernel", "datasets", "accelerate",
                "huggingface-hub", "tokenizers", "safetensors", "pyarrow", "fsspec", "triton", "numpy", "ipython",
                "dill", "multiprocess"):
        try:
            env[pkg] = md.version(pkg)
        except Exception:
            env[pkg] = None
    for mod in ("transformers", "trl", "peft", "bitsandbytes", "datasets"):
        try:
            env[f"{mod}_file"] = str(Path(__import__(mod).__file__).parent)
        except Exception as e:  # noqa: BLE001
            env[f"{mod}_file"] = f"import failed: {first_lines(e, 1)}"
    env["torch_cuda"] = torch.version.cuda
    env["cuda_available"] = torch.cuda.is_available()
    if cuda:
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
                   gpu_memory_gib=round(p.total_memory / 2**30, 1), sm_count=p.multi_processor_count,
                   bf16_supported=torch.cuda.is_bf16_supported())
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            env["driver"] = q.stdout.strip()
        except Exception as e:  # noqa: BLE001
            env["driver"] = f"nvidia-smi failed: {first_lines(e, 1)}"
    try:
        import liger_kernel.transformers  # noqa: F401

        env["liger_import"] = "ok"
    except Exception as e:  # noqa: BLE001
        env["liger_import"] = first_lines(e, 2)
    try:
        import bitsandbytes as bnb
        import torch

        dev = "cuda" if cuda else "cpu"
        layer = bnb.nn.Linear4bit(128, 128, compute_dtype=torch.bfloat16, quant_type="nf4").to(dev)
        layer(torch.randn(2, 128, device=dev, dtype=torch.bfloat16))
        env["bnb_4bit_check"] = f"ok on {dev}"
        try:
            from bitsandbytes.cextension import lib

            env["bnb_native_lib"] = str(getattr(lib, "_name", None) or lib)
        except Exception:  # noqa: BLE001
            pass
    except Exception as e:  # noqa: BLE001
        env["bnb_4bit_check"] = first_lines(e, 3)
    return env


# ----------------------------------------------------------------------------------------------- data
def build_dataset(tok, rows: int, lo: int, hi: int, seed: int = 0):
    """Prompt/completion rows whose total token count is spread uniformly over [lo, hi]."""
    from datasets import Dataset

    rng = random.Random(seed)
    zipf = [1.0 / (i + 1) for i in range(len(WORDS))]
    words = rng.choices(WORDS, weights=zipf, k=max(4000, rows * hi // 2))
    for i in range(0, len(words), 12):  # some digits, some punctuation
        words[i] = words[i] + rng.choice([".", ",", "?", f" {rng.randint(0, 99999)}"])
    ids = tok(" ".join(words), add_special_tokens=False)["input_ids"]
    out = []
    for _ in range(rows):
        total = rng.randint(lo, hi)
        start = rng.randrange(0, len(ids) - total)
        cut = max(4, int(total * rng.uniform(0.2, 0.8)))
        out.append({"prompt": tok.decode(ids[start:start + cut]),
                    "completion": tok.decode(ids[start + cut:start + total])})
    return Dataset.from_list(out)


# ------------------------------------------------------------------------------------------- training
class Ctx:
    pass


def sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def free(cuda: bool) -> None:
    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()


def gib(n: float) -> float:
    return round(n / 2**30, 3)


@contextlib.contextmanager
def liger_guard():
    """Liger patches modeling_qwen2's module globals (rope, RMSNorm and MLP classes) besides the
    model instance: put them back afterwards so later cases run stock transformers."""
    import torch
    from transformers.models.qwen2 import modeling_qwen2

    saved = dict(vars(modeling_qwen2))
    forward = modeling_qwen2.Qwen2ForCausalLM.forward
    ce = torch.nn.functional.cross_entropy
    try:
        yield
    finally:
        for k in list(vars(modeling_qwen2)):
            if k not in saved:
                delattr(modeling_qwen2, k)
        for k, v in saved.items():
            if vars(modeling_qwen2).get(k) is not v:
                setattr(modeling_qwen2, k, v)
        modeling_qwen2.Qwen2ForCausalLM.forward = forward
        torch.nn.functional.cross_entropy = ce


def build_base(ctx) -> None:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    shape = dict(TINY if ctx.smoke else QWEN_05B)
    if shape["vocab_size"] is None:
        shape["vocab_size"] = (len(ctx.tok) + 63) // 64 * 64
    assert len(ctx.tok) <= shape["vocab_size"]
    config = Qwen2Config(**shape, pad_token_id=ctx.tok.pad_token_id, bos_token_id=ctx.tok.bos_token_id,
                         eos_token_id=ctx.tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if ctx.cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    ctx.base_params = sum(p.numel() for p in model.parameters())
    ctx.base_path = ctx.tmp / "base"
    model.save_pretrained(ctx.base_path)
    ctx.tok.save_pretrained(ctx.base_path)
    ctx.base_shape = shape
    del model
    free(ctx.cuda)


def estimate_gib(ctx, quant: bool, gc_on: bool, pf) -> float:
    """lora_nb.estimate for a case, less its fixed reserve: max_memory_allocated leaves the CUDA
    context out. An upper bound where batches are padded to less than max_length."""
    import lora_nb

    m = lora_nb.estimate(str(ctx.base_path), quant="4bit" if quant else None, dtype="bf16", r=16, targets="all-linear",
                         batch_size=ctx.args.batch, max_length=ctx.args.max_length, gradient_checkpointing=gc_on,
                         device="gpu" if ctx.cuda else "cpu")
    return gib(m.total() - m.reserve)


def load_model(ctx, quant: bool, gc_on: bool):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    device_map = {"": 0} if ctx.cuda else None
    if not quant:
        return AutoModelForCausalLM.from_pretrained(ctx.base_path, dtype=torch.bfloat16, device_map=device_map)
    from peft import prepare_model_for_kbit_training

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(ctx.base_path, dtype=torch.bfloat16, quantization_config=bnb,
                                                 device_map=device_map)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc_on)


def run_case(ctx, cid: int, spec: dict) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    rec: dict = {"case": cid, "name": spec["name"], "kind": "qlora" if spec["quant"] else "lora", "status": "running"}
    pf, liger = spec["pf"], spec["liger"]
    if pf == "best" or liger == "best":
        pf, liger, why = best_of(ctx, cid)
        rec["best_choice"] = why
    if liger and not ctx.cuda:
        rec.update(status="skipped", error="liger-kernel needs CUDA/triton (cpu smoke)")
        return rec
    if liger and ctx.env.get("liger_import") != "ok":
        rec.update(status="skipped", error=f"liger_kernel does not import: {ctx.env.get('liger_import')}")
        return rec
    warm, steps = ctx.args.warmup, ctx.args.steps
    cfg = dict(output_dir=str(ctx.tmp / f"case{cid}"), max_steps=warm + steps,
               per_device_train_batch_size=ctx.args.batch, gradient_accumulation_steps=1,
               learning_rate=2e-4, logging_steps=5, save_strategy="no", report_to="none", seed=42,
               disable_tqdm=True, max_length=None if pf else ctx.args.max_length, padding_free=bool(pf),
               use_liger_kernel=bool(liger))
    if not ctx.cuda:
        cfg["use_cpu"] = True  # bf16 (TRL's default) on the CPU needs it
    if spec["gc"] is not None:
        cfg["gradient_checkpointing"] = spec["gc"]
    # what SFTConfig would do with the settings above, defaults included
    probe = SFTConfig(**cfg)
    gc_on = bool(probe.gradient_checkpointing)
    rec["settings"] = dict(gradient_checkpointing=gc_on, padding_free=bool(pf), use_liger_kernel=bool(liger),
                           bf16=probe.bf16, fp16=probe.fp16, max_length=probe.max_length,
                           batch_size=ctx.args.batch, grad_accum=1, lr=cfg["learning_rate"],
                           warmup_steps=warm, timed_steps=steps, lora=dict(r=16, alpha=32, dropout=0.0,
                                                                             targets="all-linear"))
    if spec["gc"] is None:
        rec["settings"]["gc_from_trl_default"] = True
    times: dict = {}
    model = trainer = None
    guard = liger_guard() if liger else contextlib.nullcontext()
    try:
        with guard:
            if ctx.cuda:
                torch.cuda.reset_peak_memory_stats()
            t = time.time()
            model = load_model(ctx, spec["quant"], gc_on)
            torch.manual_seed(0)
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                     target_modules="all-linear", task_type="CAUSAL_LM"))
            sync(ctx.cuda)
            times["load"] = round(time.time() - t, 2)
            rec["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
            if ctx.cuda:  # the training peak below starts from the loaded model (load transients excluded)
                rec["mem_after_load_gib"] = gib(torch.cuda.memory_allocated())
                rec["peak_load_gib"] = gib(torch.cuda.max_memory_allocated())
                torch.cuda.reset_peak_memory_stats()

            counts: list = []
            marks: dict = {}

            class Bench(SFTTrainer):
                def training_step(self, model, inputs, *a, **k):
                    loss = super().training_step(model, inputs, *a, **k)
                    ids, mask, labels = inputs["input_ids"], inputs.get("attention_mask"), inputs.get("labels")
                    real = mask.sum() if mask is not None else torch.tensor(ids.numel())
                    lab = (labels[..., 1:] != -100).sum() if labels is not None else real
                    counts.append((real, ids.numel(), lab, loss))
                    return loss

            class Timer(TrainerCallback):
                def on_step_end(self, args, state, control, **kw):
                    if state.global_step == warm:
                        sync(ctx.cuda)
                        marks["t0"], marks["i0"] = time.perf_counter(), len(counts)
                    elif state.global_step == warm + steps:
                        sync(ctx.cuda)
                        marks["t1"], marks["i1"] = time.perf_counter(), len(counts)

            t = time.time()
            trainer = Bench(model=model, args=SFTConfig(**cfg), train_dataset=ctx.dataset, processing_class=ctx.tok,
                            callbacks=[Timer()])
            times["trainer_init"] = round(time.time() - t, 2)
            lens = [len(x) for x in trainer.train_dataset["input_ids"]]
            rec["dataset"] = dict(rows=len(lens), len_min=min(lens), len_mean=round(sum(lens) / len(lens), 1),
                                  len_max=max(lens))
            rec["resolved"] = dict(trainer_padding_free=getattr(trainer, "padding_free", None),
                                   gradient_checkpointing=trainer.args.gradient_checkpointing,
                                   bf16=trainer.args.bf16, liger_kernel_config=trainer.args.liger_kernel_config,
                                   collator=type(trainer.data_collator).__name__)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            tr_peft, all_peft = model.get_nb_trainable_parameters()
            rec["params"] = dict(trainable=trainable, total_peft=all_peft,
                                 total_numel=sum(p.numel() for p in model.parameters()),
                                 trainable_dtypes=sorted({str(p.dtype) for p in model.parameters() if p.requires_grad}))
            t = time.time()
            trainer.train()
            sync(ctx.cuda)
            times["train"] = round(time.time() - t, 2)
            if ctx.cuda:
                rec["peak_alloc_gib"] = gib(torch.cuda.max_memory_allocated())
                rec["peak_reserved_gib"] = gib(torch.cuda.max_memory_reserved())
            if "t1" not in marks:
                raise RuntimeError(f"timing marks missing ({marks}); steps done: {trainer.state.global_step}")
            window = [tuple(float(x) for x in c) for c in counts[marks["i0"]:marks["i1"]]]
            secs = marks["t1"] - marks["t0"]
            real = sum(c[0] for c in window)
            padded = sum(c[1] for c in window)
            lab = sum(c[2] for c in window)
            loss = sum(c[3] * c[2] for c in window) / max(lab, 1)
            all_losses = [float(c[3]) for c in counts]
            rec.update(status="ok", tokens_per_s=round(real / secs, 1), padded_tokens_per_s=round(padded / secs, 1),
                       label_tokens_per_s=round(lab / secs, 1), step_ms=round(1000 * secs / len(window), 1),
                       timed_seconds=round(secs, 3), tokens=dict(real=int(real), padded=int(padded), label=int(lab)),
                       loss_per_token=round(loss, 4), loss_first_step=round(all_losses[0], 4),
                       loss_last_step=round(all_losses[-1], 4))
            rec["estimate_gib"] = estimate_gib(ctx, spec["quant"], gc_on, pf)
    except Exception as e:  # noqa: BLE001
        rec.update(status="failed", error=first_lines(e), traceback=tb_tail())
        if ctx.cuda:
            rec["peak_alloc_gib"] = gib(torch.cuda.max_memory_allocated())
    finally:
        rec["seconds"] = times
        if trainer is not None:
            with contextlib.suppress(Exception):
                trainer.accelerator.free_memory()
        del trainer, model
        free(ctx.cuda)
    return rec


def best_of(ctx, cid: int):
    """padding_free / liger for the 'best' case: each kept when its case ran and beat the gc-off case by 2%."""
    base = 2 if cid == 5 else 7
    res = {r["case"]: r for r in ctx.results["cases"]}

    def tps(c):
        r = res.get(c)
        return r.get("tokens_per_s") if r and r.get("status") == "ok" else None

    ref = tps(base)
    pf = ref is not None and tps(base + 1) is not None and tps(base + 1) > 1.02 * ref
    liger = ref is not None and tps(base + 2) is not None and tps(base + 2) > 1.02 * ref
    why = f"vs case {base} ({ref} tok/s): padding_free {tps(base + 1)} -> {pf}, liger {tps(base + 2)} -> {liger}"
    return pf, liger, why


# ------------------------------------------------------------------------------------- lora_nb on CUDA
def lora_nb_smoke(ctx) -> dict:
    import torch

    import lora_nb
    from lora_nb.demo import tasks
    from lora_nb.demo.tiny import tiny_model

    out: dict = {"case": 11, "name": "lora_nb end to end", "steps": []}
    state: dict = {}

    def step(name, fn, needs=()):
        if any(n not in state for n in needs):
            out["steps"].append(dict(step=name, ok=False, seconds=0, error=f"skipped: needs {list(needs)}"))
            return
        t = time.time()
        log(f"  lora_nb: {name}")
        try:
            detail = fn()
            out["steps"].append(dict(step=name, ok=True, seconds=round(time.time() - t, 2), detail=detail))
            state[name] = True
        except BaseException as e:  # noqa: BLE001 - SystemExit from the CLI too
            out["steps"].append(dict(step=name, ok=False, seconds=round(time.time() - t, 2), error=first_lines(e),
                                     traceback=tb_tail()))
            log(f"  lora_nb: {name} FAILED: {first_lines(e, 1)}")

    rows = tasks.examples(256, seed=0)
    prompts = ["Is this number even or odd?\n\n12", "Even or odd?\n\n7"]

    def describe(model) -> dict:
        p = next(model.parameters())
        return dict(device=str(p.device), cls=type(model).__name__,
                    quant=bool(getattr(model, "is_loaded_in_4bit", False)),
                    dtypes=sorted({str(x.dtype) for x in model.parameters()}),
                    gc=bool(getattr(model, "is_gradient_checkpointing", False)))

    for quant in ("4bit", None):
        tag = quant or "bf16"
        keys = {k: f"{k} [{tag}]" for k in ("tiny_model", "load", "inject", "train", "generate", "compare", "merge",
                                             "merged_generate")}

        def build():
            state["path"] = tiny_model("llama")
            return str(state["path"])

        def load():
            if ctx.cuda:
                torch.cuda.reset_peak_memory_stats()
            state["model"], state["tok"] = lora_nb.load(str(state["path"]), quant=quant)
            return describe(state["model"])

        def inject():
            state["peft"] = lora_nb.inject(state["model"], r=8, alpha=16, targets="all-linear")
            return describe(state["peft"])

        def train():
            run = lora_nb.train(state["peft"], state["tok"], rows, steps=ctx.args.nb_steps, batch_size=8,
                                max_length=64, lr=2e-3, output_dir=str(ctx.tmp / f"nb-run-{tag}"), progress=False)
            d = dict(status=run.status, step=run.step, loss=run.last("loss"), message=run.message,
                     adapter=str(run.adapter_dir), history_rows=len(run.history),
                     tokens_per_s=run.last("tokens_per_s") if hasattr(run, "last") else None)
            if ctx.cuda:
                d["peak_alloc_gib"] = gib(torch.cuda.max_memory_allocated())
            if run.status != "finished":
                raise RuntimeError(f"run status {run.status}: {run.message}")
            return d

        def generate():
            return lora_nb.generate(state["peft"], state["tok"], prompts, max_new_tokens=6)

        def compare():
            return [list(r) for r in lora_nb.compare(state["peft"], state["tok"], prompts[:1], max_new_tokens=6).rows]

        def merge():
            state["merged"] = lora_nb.merge(state["peft"], ctx.tmp / f"nb-merged-{tag}", tokenizer=state["tok"])
            return sorted(p.name for p in Path(state["merged"]).iterdir())

        def merged_generate():
            from transformers import AutoModelForCausalLM, AutoTokenizer

            m = AutoModelForCausalLM.from_pretrained(state["merged"])
            if ctx.cuda:
                m = m.to("cuda")
            t = AutoTokenizer.from_pretrained(state["merged"])
            return dict(answers=lora_nb.generate(m, t, prompts, max_new_tokens=6), **describe(m))

        for k in ("model", "peft", "tok", "merged"):
            state.pop(k, None)
        for k in keys.values():
            state.pop(k, None)
        step(keys["tiny_model"], build)
        step(keys["load"], load, needs=[keys["tiny_model"]])
        step(keys["inject"], inject, needs=[keys["load"]])
        step(keys["train"], train, needs=[keys["inject"]])
        step(keys["generate"], generate, needs=[keys["inject"]])
        step(keys["compare"], compare, needs=[keys["inject"]])
        step(keys["merge"], merge, needs=[keys["inject"]])
        step(keys["merged_generate"], merged_generate, needs=[keys["merge"]])
        for k in ("model", "peft", "merged"):
            state.pop(k, None)
        free(ctx.cuda)

    def demo():
        from lora_nb.demo import run_demo

        figures = run_demo(ctx.tmp / "nb-demo", steps=ctx.args.demo_steps)
        if not figures["accuracy_after"] > figures["accuracy_before"]:
            raise RuntimeError(f"demo did not learn: {figures}")
        return figures

    if not ctx.args.skip_demo:
        step("demo (lora_nb.demo.run_demo)", demo)
    free(ctx.cuda)
    out["status"] = "ok" if all(s["ok"] for s in out["steps"]) else "failed"
    out["passed"] = sum(s["ok"] for s in out["steps"])
    out["total"] = len(out["steps"])
    return out


# -------------------------------------------------------------------------------------------- output
def fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def tables(results: dict) -> str:
    env = results["env"]
    lines = [f"GPU: {env.get('gpu', 'cpu')} | torch {env.get('torch')} (CUDA {env.get('torch_cuda')}) | "
             f"transformers {env.get('transformers')} | peft {env.get('peft')} | trl {env.get('trl')} | "
             f"bitsandbytes {env.get('bitsandbytes')} | liger {env.get('liger-kernel')} | "
             f"datasets {env.get('datasets')}",
             f"model: {results['config'].get('model')} | {results['config'].get('timing')}", "",
             "| # | case | status | tok/s | step ms | peak GiB | estimate GiB | loss/tok | trainable | total | "
             "bs | max_len | ga | gc | pf | liger |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in results["cases"]:
        s = r.get("settings", {})
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {(r.get('error') or '').splitlines()[0][:70]}"
        lines.append("| " + " | ".join([
            str(r["case"]), r["name"], status, fmt(r.get("tokens_per_s"), 0), fmt(r.get("step_ms")),
            fmt(r.get("peak_alloc_gib"), 2), fmt(r.get("estimate_gib"), 2), fmt(r.get("loss_per_token"), 4),
            fmt(r.get("params", {}).get("trainable")), fmt(r.get("params", {}).get("total_peft")),
            fmt(s.get("batch_size")), fmt(s.get("max_length")), fmt(s.get("grad_accum")),
            "on" if s.get("gradient_checkpointing") else "off" if s else "-",
            "on" if s.get("padding_free") else "off" if s else "-",
            "on" if s.get("use_liger_kernel") else "off" if s else "-"]) + " |")
    nb = results.get("lora_nb")
    if nb:
        lines += ["", f"lora_nb end to end (case 11): {nb.get('passed')}/{nb.get('total')} steps passed", "",
                  "| step | ok | s | detail / error |", "|---|---|---:|---|"]
        for s in nb["steps"]:
            detail = s.get("detail") if s["ok"] else s.get("error")
            text = json.dumps(detail, default=str) if not isinstance(detail, str) else detail
            text = text.replace("|", "/").replace("\n", " ")
            lines.append(f"| {s['step']} | {'yes' if s['ok'] else 'NO'} | {s['seconds']} | {text[:220]} |")
    return "\n".join(lines)


def save(ctx) -> None:
    ctx.results["elapsed_s"] = round(time.time() - T0, 1)
    (ctx.out / "gpu.json").write_text(json.dumps(ctx.results, indent=1, default=str))


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny model on the CPU, 2 timed steps: checks the code paths")
    p.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).resolve().parent),
                   help="folder for gpu.json and gpu.md (default $OUT, else benchmarks/)")
    p.add_argument("--cases", default="1-11", help="e.g. 1-5,11")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per case (5; smoke 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per case (20; smoke 2)")
    p.add_argument("--batch", type=int, default=None, help="per-device batch size (8; smoke 2)")
    p.add_argument("--max-length", type=int, default=None, help="max_length (512; smoke 128)")
    p.add_argument("--rows", type=int, default=None, help="dataset rows (320; smoke 24)")
    p.add_argument("--budget-s", type=float, default=210.0,
                   help="start no benchmark case after this many seconds from start (keeps the run under ~4 min)")
    p.add_argument("--nb-steps", type=int, default=10, help="lora_nb.train steps in case 11")
    p.add_argument("--demo-steps", type=int, default=None, help="demo training steps (demo default 200; smoke 10)")
    p.add_argument("--skip-demo", action="store_true")
    args = p.parse_args(argv)
    smoke = args.cpu_smoke
    d = dict(warmup=(1, 5), steps=(2, 20), batch=(2, 8), max_length=(128, 512), rows=(24, 320))
    for k, (s, g) in d.items():
        if getattr(args, k) is None:
            setattr(args, k, s if smoke else g)
    if smoke and args.demo_steps is None:
        args.demo_steps = 10
    wanted = parse_cases(args.cases)

    ctx = Ctx()
    ctx.args, ctx.smoke = args, smoke
    ctx.out = Path(args.out)
    ctx.out.mkdir(parents=True, exist_ok=True)
    ctx.tmp = Path(tempfile.mkdtemp(prefix="lora_nb_gpu_"))
    os.environ["LORA_NB_CACHE"] = str(ctx.tmp / "lora_nb_cache")  # a fresh tiny model / tokenizer build
    log(f"out={ctx.out} tmp={ctx.tmp} cases={wanted} smoke={smoke}")

    import torch

    ctx.cuda = torch.cuda.is_available() and not smoke
    if not smoke and not torch.cuda.is_available():
        log("no CUDA device: use --cpu-smoke for a CPU run")
        return 2
    ctx.env = environment(ctx.cuda)
    log("env: " + json.dumps({k: v for k, v in ctx.env.items() if not k.endswith("_file")}, default=str))
    ctx.results = {"env": ctx.env, "config": {}, "cases": [], "lora_nb": None}
    save(ctx)

    if 11 in wanted:
        log("case 11: lora_nb end to end")
        try:
            ctx.results["lora_nb"] = lora_nb_smoke(ctx)
        except Exception as e:  # noqa: BLE001
            ctx.results["lora_nb"] = {"case": 11, "status": "failed", "error": first_lines(e), "traceback": tb_tail(),
                                      "steps": []}
        nb = ctx.results["lora_nb"]
        log(f"case 11: {nb.get('status')} ({nb.get('passed')}/{nb.get('total')})")
        save(ctx)

    bench = [c for c in wanted if c in CASES]
    if bench:  # quieter logs from here on (case 11 above ran with lora_nb's own settings)
        with contextlib.suppress(Exception):
            import datasets

            datasets.disable_progress_bars()
        with contextlib.suppress(Exception):
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        try:
            from transformers import AutoTokenizer

            from lora_nb.demo.tiny import tiny_tokenizer

            t = time.time()
            ctx.tok = AutoTokenizer.from_pretrained(tiny_tokenizer())
            hi = min(500, args.max_length - 8)
            ctx.dataset = build_dataset(ctx.tok, args.rows, 16, hi)
            build_base(ctx)
            ctx.results["config"] = dict(
                model=f"Qwen2 {'tiny' if smoke else '0.5B-shaped'} random bf16 "
                      f"({ctx.base_params / 1e6:.1f}M params, hidden {ctx.base_shape['hidden_size']}, "
                      f"{ctx.base_shape['num_hidden_layers']} layers, vocab {ctx.base_shape['vocab_size']})",
                shape=ctx.base_shape, base_params=ctx.base_params, tokenizer_len=len(ctx.tok),
                data=f"{args.rows} prompt/completion rows, {16}-{hi} tokens each",
                timing=f"{args.warmup} warm-up + {args.steps} timed steps, batch {args.batch}, "
                       f"max_length {args.max_length}, lr 2e-4, LoRA r=16 alpha=32 dropout 0 all-linear",
                setup_seconds=round(time.time() - t, 1))
            log(f"base model built: {ctx.results['config']['model']} in {time.time() - t:.1f}s")
        except Exception as e:  # noqa: BLE001
            log(f"setup FAILED: {first_lines(e)}\n{tb_tail()}")
            ctx.results["setup_error"] = dict(error=first_lines(e), traceback=tb_tail())
            bench = []
        save(ctx)

    for cid in bench:
        spec = CASES[cid]
        if time.time() - T0 > args.budget_s:
            rec = {"case": cid, "name": spec["name"], "status": "skipped",
                   "error": f"time budget ({args.budget_s:.0f}s) spent"}
        else:
            log(f"case {cid}: {spec['name']}")
            rec = run_case(ctx, cid, spec)
        ctx.results["cases"].append(rec)
        log(f"case {cid}: {rec['status']} tok/s={rec.get('tokens_per_s')} peak={rec.get('peak_alloc_gib')}GiB "
            f"loss/tok={rec.get('loss_per_token')} {rec.get('seconds', '')} {rec.get('error', '')}")
        if rec["status"] == "failed":
            print(rec.get("traceback", ""), flush=True)
        save(ctx)

    table = tables(ctx.results)
    (ctx.out / "gpu.md").write_text(table + "\n")
    save(ctx)
    print("\n" + table + "\n", flush=True)
    log(f"done; results in {ctx.out / 'gpu.json'} and {ctx.out / 'gpu.md'}")
    shutil.rmtree(ctx.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
