"""startup: what it costs to start using lora_nb — the import, the IPython extension, and the
target table of a very large model — each in a fresh process, against a reference.

- ``import lora_nb`` in a new interpreter, against ``import transformers`` (lora_nb loads its
  libraries on first use: its import should cost a fraction of that).
- ``%load_ext lora_nb`` in a new IPython shell, against ``%load_ext autoreload`` (IPython's own).
- ``lora_nb.discover(config)`` on Llama-3-70B, Mixtral-8x22B and Qwen3-235B-A22B configs built
  locally (nothing downloaded), in a process that has imported the training stack, against
  building the same model on the meta device the usual way (accelerate's ``init_empty_weights``,
  under which transformers still initialises every weight; discover skips that). Its CPU time has
  a budget of its own: under a second for the 70B config's first call.

Time is the operation alone (wall clock, and the process's CPU time for discover); memory the
growth of the process's peak resident memory over it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ..common import CaseResult, Fresh, PeakRSS, alternate, compare

ROOT = Path(__file__).resolve().parents[2]
PAIRS = 3
# The published shapes (config.json of each model), built as transformers configs: no download.
CONFIGS = {
    "Llama-3-70B": ("LlamaConfig", dict(vocab_size=128256, hidden_size=8192, intermediate_size=28672,
                                        num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                                        max_position_embeddings=8192, tie_word_embeddings=False)),
    "Mixtral-8x22B": ("MixtralConfig", dict(vocab_size=32768, hidden_size=6144, intermediate_size=16384,
                                            num_hidden_layers=56, num_attention_heads=48, num_key_value_heads=8,
                                            num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=65536)),
    "Qwen3-235B-A22B": ("Qwen3MoeConfig", dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                                               moe_intermediate_size=1536, num_hidden_layers=94, num_attention_heads=64,
                                               num_key_value_heads=4, head_dim=128, num_experts=128,
                                               num_experts_per_tok=8, max_position_embeddings=40960,
                                               tie_word_embeddings=False)),
}
# discover's own budget, on its median CPU seconds (not a ratio: whatever the meta-device build costs).
CPU_GOALS = {"Llama-3-70B": "< 1 s"}
# Run by a new interpreter: nothing is imported before the operation but what the setup needs.
# The peak is the kernel's record (VmHWM), reset to the current size first: a new process's
# getrusage peak starts at its parent's.
CHILD = """import resource, time
{setup}
def peak():
    try:
        return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
before = peak()
start = time.perf_counter()
{operation}
seconds = time.perf_counter() - start
print(seconds, peak() - before)
"""
SHELL = "from IPython.core.interactiveshell import InteractiveShell\nip = InteractiveShell.instance()"


def run(quick: bool, fresh: Fresh) -> CaseResult:
    rows = []

    def add(measure: str, subject: tuple[str, Callable[[], dict]], baseline: tuple[str, Callable[[], dict]],
            cpu_goal: str = "") -> None:
        results = alternate(subject[1], baseline[1], PAIRS)
        kw = dict(subject=subject[0], baseline=baseline[0], higher_is_better=False)
        rows.append(compare("startup", f"{measure}: time", "s", results, unit="s", **kw))
        if "cpu" in results[0][0]:
            rows.append(compare("startup", f"{measure}: CPU time", "cpu", results, unit="s", goal=cpu_goal, **kw))
        rows.append(compare("startup", f"{measure}: memory", "mib", results, unit="MiB", **kw))

    add("import", ("import lora_nb", lambda: interpreter("", "import lora_nb")),
        ("import transformers", lambda: interpreter("", "import transformers")))
    add("IPython extension",
        ("%load_ext lora_nb", lambda: interpreter(SHELL, "ip.run_line_magic('load_ext', 'lora_nb')")),
        ("%load_ext autoreload", lambda: interpreter(SHELL, "ip.run_line_magic('load_ext', 'autoreload')")))
    configs = list(CONFIGS)[:1] if quick else list(CONFIGS)
    for name in configs:
        add(f"discover {name}", ("lora_nb.discover(config)", lambda name=name: fresh(on_config, name, "discover")),
            ("meta-device build", lambda name=name: fresh(on_config, name, "build")), cpu_goal=CPU_GOALS.get(name, ""))
    return CaseResult("startup", rows, settings={"pairs": PAIRS, "configs": configs},
                      notes=["import and %load_ext: a new interpreter each; discover: a fresh process forked from "
                             "one that has imported the training stack (benchmarks/__main__.py's PRELOAD: torch, "
                             "transformers, peft, datasets, TRL: what a notebook has by the time it asks); the "
                             "model's own modeling module is imported by the operation, on both sides.",
                             "discover's CPU time has a budget of its own (the goal, on its median): "
                             + ", ".join(f"{n} {g}" for n, g in CPU_GOALS.items()) + "."])


def interpreter(setup: str, operation: str) -> dict:
    """Time and peak-memory growth of ``operation`` in a new interpreter, after ``setup``."""
    done = subprocess.run([sys.executable, "-c", CHILD.format(setup=setup, operation=operation)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    seconds, grown = done.stdout.split()[-2:]
    return {"s": float(seconds), "mib": int(grown) / (2**20 if sys.platform == "darwin" else 1024)}


def on_config(name: str, what: str) -> dict:
    """In a fresh process: ``discover`` the model ``name`` from its config, or only build it on the meta device."""
    import transformers
    from accelerate import init_empty_weights

    import lora_nb

    kind, values = CONFIGS[name]
    config = getattr(transformers, kind)(**values)
    with PeakRSS() as peak:
        start, cpu = time.perf_counter(), time.process_time()
        if what == "discover":
            lora_nb.discover(config)
        else:
            with init_empty_weights():
                transformers.AutoModelForCausalLM.from_config(config)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"s": seconds, "cpu": cpu, "mib": peak.growth_mib}
