"""live_chart: the same training in a real Jupyter kernel with and without ``LiveChart``.

A kernel is started with this interpreter (jupyter_client, as a notebook front end would) and
each run is one executed cell, alternating: ``lora_nb.train(..., callbacks=[LiveChart()])``
against plain ``lora_nb.train(...)`` with its default progress bar. The chart's display updates
travel to this process as they would to JupyterLab, and are read here. The chart redraws its
image only as often as a 2% budget allows; the goal is that training slows by no more.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..common import CaseResult, Fresh, alternate, compare

SIZES = {True: dict(shape="tiny", rows=16, steps=8, skip=1, max_length=128, pairs=3),
         False: dict(shape="small", rows=256, steps=40, skip=2, max_length=256, pairs=3)}
ROOT = Path(__file__).resolve().parents[2]
SETUP = """
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from transformers import AutoTokenizer
from lora_nb.notebook.live import LiveChart
from benchmarks.workloads import instruction_rows, model_folder, train_with_lora_nb

SIZE = {size!r}
FOLDER = model_folder(SIZE["shape"])
ROWS = instruction_rows(AutoTokenizer.from_pretrained(FOLDER), SIZE["rows"])

def side(chart, name):
    callbacks = [LiveChart()] if chart else []
    metrics, _ = train_with_lora_nb(FOLDER, ROWS, Path(name), SIZE["skip"], callbacks=callbacks,
                                    steps=SIZE["steps"], max_length=SIZE["max_length"])
    if chart:
        metrics.update(drawing=callbacks[0].overhead, redraws=callbacks[0].redraws)
    print("RESULT", json.dumps(metrics))
"""


def run(quick: bool, fresh: Fresh) -> CaseResult:
    from jupyter_client.manager import start_new_kernel

    size = SIZES[quick]
    # the kernelspec says plain "python": this interpreter's folder goes first on the PATH
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    with tempfile.TemporaryDirectory() as tmp, open(fresh.log or os.devnull, "a") as log:
        manager, client = start_new_kernel(kernel_name="python3", cwd=tmp, env=env, startup_timeout=120,
                                           stdout=log, stderr=log)
        try:
            execute(client, SETUP.format(root=str(ROOT), size=size))
            runs = itertools.count()
            results = alternate(lambda: cell(client, f"side(True, 'chart-{next(runs)}')"),
                                lambda: cell(client, f"side(False, 'plain-{next(runs)}')"), size["pairs"])
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    charted = results[0]
    kw = dict(subject="train() + LiveChart", baseline="train(), progress bar")
    return CaseResult("live_chart", [
        compare("live_chart", "training speed (steady steps)", "tokens_per_s", results, unit="tokens/s",
                higher_is_better=True, goal="≥ 0.98", **kw),
        compare("live_chart", "whole train() call", "train_s", results, unit="s", higher_is_better=False,
                goal="≤ 1.02", **kw),
    ], settings=size, notes=[
        f"the chart's own timing: drawing took {100 * statistics.median(m['drawing'] for m in charted):.2f}% of the "
        f"training time (median); per run, image redraws: {statistics.median(m['redraws'] for m in charted):.0f}, "
        f"display messages: {statistics.median(m['displays'] for m in charted):.0f}.",
        f"speed: real (non-padding) tokens per second over the steps after the first {size['skip']}."])


def cell(client: Any, code: str) -> dict:
    """Execute ``code`` in the kernel; the metrics it printed, and how many display messages it sent."""
    printed, displays = execute(client, code)
    line = next(line for line in printed.splitlines() if line.startswith("RESULT "))
    return {**json.loads(line.removeprefix("RESULT ")), "displays": displays}


def execute(client: Any, code: str, timeout: float = 1800) -> tuple[str, int]:
    """Run one cell as a front end does: its stdout, and the count of its display messages
    (reading them all, so the kernel never waits on this side). A cell's error is raised here."""
    msg_id = client.execute(code)
    printed, displays = [], 0
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            printed.append(content["text"])
        elif kind in ("display_data", "update_display_data"):
            displays += 1
        elif kind == "error":
            raise RuntimeError(f"the kernel cell failed: {content['ename']}: {content['evalue']}\n" +
                               "\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(printed), displays
