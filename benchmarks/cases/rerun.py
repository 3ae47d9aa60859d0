"""rerun: the wait before training starts — "tweak a setting and rerun" is the product, and this
wait is what a user feels each time.

Each side runs in a new interpreter (imports included, as in a new kernel): it loads the model,
adds lora_nb's default adapter, and calls training twice on the same rows — a first call and a
rerun — timing each call from its start to the beginning of its first step (a callback's
``on_step_begin``). lora_nb's side is ``lora_nb.load`` + ``inject`` + ``train``; the baseline is
the same written by hand: ``from_pretrained`` + ``get_peft_model`` + ``SFTTrainer(...).train()``.
Both train one step: only the wait before it is measured. Models: the embedded demo model (the
zero-download default) and a SmolLM2-135M-shaped one (random weights, nothing downloaded).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..common import CaseResult, Fresh, alternate, compare

ROOT = Path(__file__).resolve().parents[2]
SIZES = {True: dict(shapes=["demo"], rows=64, pairs=2), False: dict(shapes=["demo", "smollm2-135m"], rows=400, pairs=3)}

CHILD = """
import json, sys, tempfile, time
start = time.perf_counter()
from transformers import TrainerCallback

class FirstStep(TrainerCallback):
    at = None
    def on_step_begin(self, args, state, control, **kw):
        self.at = self.at or time.perf_counter()

sys.path.insert(0, {root!r})
from benchmarks.workloads import LORA, instruction_rows, model_folder
shape, side, count = {shape!r}, {side!r}, {rows}
if shape == "demo":
    from lora_nb.demo.tiny import tiny_model
    folder = str(tiny_model("llama", "demo"))
else:
    folder = str(model_folder(shape))
tmp = tempfile.mkdtemp()
out = {{}}
t = time.perf_counter()
if side == "lora_nb":
    import lora_nb
    model, tok = lora_nb.load(folder)
    model = lora_nb.inject(model, verbose=False)
else:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    torch.manual_seed(LORA["seed"])
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=LORA["targets"], task_type="CAUSAL_LM"))
out["load_s"] = time.perf_counter() - start
rows = instruction_rows(tok, count)
for call in ("first", "rerun"):
    first = FirstStep()
    t = time.perf_counter()
    if side == "lora_nb":
        lora_nb.train(model, tok, rows, steps=1, max_length=256, output_dir=f"{{tmp}}/{{call}}", callbacks=[first],
                      progress=False)
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer
        args = SFTConfig(output_dir=f"{{tmp}}/{{call}}", max_steps=1, max_length=256, bf16=True, use_cpu=True,
                         gradient_checkpointing=False, report_to="none", disable_tqdm=True)
        SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                   callbacks=[first]).train()
    out[call + "_s"] = first.at - t
print("RESULT", json.dumps(out))
"""


def run(quick: bool, fresh: Fresh) -> CaseResult:
    size, rows = SIZES[quick], []
    kw = dict(subject="lora_nb", baseline="PEFT + TRL by hand", unit="s", higher_is_better=False)
    for shape in size["shapes"]:
        results = alternate(lambda: child(shape, "lora_nb", size["rows"]), lambda: child(shape, "hand", size["rows"]),
                            size["pairs"])
        rows += [compare("rerun", f"{shape}: new interpreter to a model with an adapter", "load_s", results, **kw),
                 compare("rerun", f"{shape}: first train() call to its first step", "first_s", results, **kw),
                 compare("rerun", f"{shape}: rerun, train() call to its first step", "rerun_s", results, **kw)]
    return CaseResult("rerun", rows, settings=size, notes=[
        "each side in a new interpreter (imports included); the two train() calls of a side train the same rows "
        "with the same settings, one step each; times from the call to the beginning of its first step. lora_nb's "
        "goal for a rerun on the embedded model: under 2 s (the subject median); beyond what the hand side does, "
        "lora_nb checks the data, writes the run folder and decides gradient checkpointing before the first step."])


def child(shape: str, side: str, rows: int) -> dict:
    """One side's timings (``load_s``, ``first_s``, ``rerun_s``) from a new interpreter."""
    code = CHILD.format(root=str(ROOT), shape=shape, side=side, rows=rows)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0 or "RESULT " not in done.stdout:
        raise RuntimeError(f"the {side} side failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
