"""live_chart: the same training in a real Jupyter kernel with and without ``LiveChart``.

A kernel is started with this interpreter (jupyter_client, as a notebook front end would) and
each run is one executed cell, alternating: ``lora_nb.train(..., callbacks=[LiveChart()])``
against plain ``lora_nb.train(...)`` with its default progress bar. The chart's display updates
travel to this process as they would to JupyterLab, and are read here: at each status line, how
far behind it the image then shown is (in steps, and in seconds since that image arrived). The
chart redraws its image only as often as a 2% budget allows; the goal is that training slows by
no more, and that the image stays within a few seconds of the status line.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lora_nb.core.charts import png_step

from ..common import CaseResult, Fresh, alternate, compare

# skip 2: the steady steps start past the first image (drawn once step 1 is logged), as the full run's do
SIZES = {True: dict(shape="tiny", rows=16, steps=8, skip=2, max_length=128, pairs=3),
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
        metrics.update(drawing=callbacks[0].overhead, redraws=callbacks[0].redraws, setup=callbacks[0].setup_seconds)
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

    def median(key: str) -> float:
        return statistics.median(m[key] for m in charted)

    kw = dict(subject="train() + LiveChart", baseline="train(), progress bar")
    return CaseResult("live_chart", [
        compare("live_chart", "training speed (steady steps)", "tokens_per_s", results, unit="tokens/s",
                higher_is_better=True, goal="≥ 0.98", **kw),
        compare("live_chart", "whole train() call", "train_s", results, unit="s", higher_is_better=False,
                goal="≤ 1.02", **kw),
    ], settings=size, notes=[
        f"the chart's own timing: drawing took {100 * median('drawing'):.2f}% of the training time (median; "
        f"budget 2%), building the figure {median('setup'):.2f} s before training; per run, image redraws: "
        f"{median('redraws'):.0f}, display messages: {median('displays'):.0f}.",
        f"the image behind the status line, at each status line the front end got (per run, median of the runs): "
        f"at most {median('lag_steps_max'):.0f} steps and {median('lag_s_max'):.1f} s, median "
        f"{median('lag_steps_median'):.0f} steps and {median('lag_s_median'):.1f} s; the first image showed step "
        f"{median('first_image')}.",
        f"speed: real (non-padding) tokens per second over the steps after the first {size['skip']}."])


def cell(client: Any, code: str) -> dict:
    """Execute ``code`` in the kernel; the metrics it printed, how many display messages it sent,
    and how far the image was behind the status line at each status update (:func:`lags`)."""
    printed, shown = execute(client, code)
    line = next(line for line in printed.splitlines() if line.startswith("RESULT "))
    return {**json.loads(line.removeprefix("RESULT ")), "displays": len(shown), **lags(shown)}


def lags(shown: list[tuple[float, dict]]) -> dict:
    """From the display messages as they arrived (``(time, data)``): at each status line, the steps
    between it and the image then shown, and the seconds since that image arrived (0 when level)."""
    image, since, behind, first = None, 0.0, [], None
    for at, data in shown:
        if "image/png" in data:
            image, since = png_step(base64.b64decode(data["image/png"])), at
            first = image if first is None else first
        elif "step " in data.get("text/html", "") and image is not None:
            steps = int(re.search(r"step (\d+)/", data["text/html"]).group(1)) - image
            behind.append((steps, at - since if steps else 0.0))
    if not behind:
        return {}
    return {"lag_steps_max": max(s for s, _ in behind), "lag_steps_median": statistics.median(s for s, _ in behind),
            "lag_s_max": max(s for _, s in behind), "lag_s_median": statistics.median(s for _, s in behind),
            "first_image": first}


def execute(client: Any, code: str, timeout: float = 1800) -> tuple[str, list[tuple[float, dict]]]:
    """Run one cell as a front end does: its stdout, and its display messages' data with the time
    each arrived (reading them all, so the kernel never waits on this side). A cell's error is raised here."""
    msg_id = client.execute(code)
    printed, shown = [], []
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            printed.append(content["text"])
        elif kind in ("display_data", "update_display_data"):
            shown.append((time.perf_counter(), content["data"]))
        elif kind == "error":
            raise RuntimeError(f"the kernel cell failed: {content['ename']}: {content['evalue']}\n" +
                               "\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(printed), shown
