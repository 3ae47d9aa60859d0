"""The shipped notebooks run end to end in a real Jupyter kernel, and a kernel interrupt stops
a blocking %lora train cleanly."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def outputs_of(nb, mime):
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if mime in o.get("data", {})]


def text_of(nb):
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(o.get("text", "") + "".join(str(v) for k, v in o.get("data", {}).items()
                                                      if k.startswith("text/")))
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["quickstart", "python_api"])
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def executed(tmp_path_factory, together):
    """{name: (its folder, the executed notebook or what stopped it)}: both at once, one core each,
    in about half the time of one after the other."""
    return together({name: NOTEBOOKS / f"{name}.ipynb" for name in ("python_api", "quickstart")},
                    tmp_path_factory.mktemp, timeout=600)


@pytest.mark.parametrize("name", ["quickstart", "python_api"])
def test_notebook_runs_end_to_end(name, executed):
    tmp_path, nb = executed[name]
    if isinstance(nb, Exception):
        raise nb
    text = text_of(nb)
    assert "finished 150 steps" in text
    pngs = outputs_of(nb, "image/png")
    assert pngs, "the finished training chart stays in the notebook as a PNG"
    runs = list((tmp_path / "runs").iterdir())
    assert (len(runs) == 1 and (runs[0] / "dashboard.png").exists()
            and (runs[0] / "adapter" / "adapter_model.safetensors").exists())
    merged = tmp_path / ("merged_model" if name == "quickstart" else "merged_api")
    assert (merged / "model.safetensors").exists()
    if name == "python_api":
        score = re.search(r"exact_match (\d\.\d\d) on 100 rows", text)
        assert score and float(score.group(1)) >= 0.9, "the trained adapter answers the held-out rows"
        # a Hub-shaped dataset (question/answer): the mapping that fits is named, then applied and checked
        assert "set data.columns: {instruction: question, output: answer}" in text
        assert re.search(r"row 1: 2 of \d+ tokens trained", text), "the answer and its end token carry loss"
    if name == "quickstart":
        assert (tmp_path / "train_lora.py").exists()
        assert "odd" in text  # the adapter's answer in the compare table
    assert_quiet(nb)


PROGRESS_BAR = re.compile(r"\d+/\d+ \[|it/s\]|examples/s\]")


def assert_quiet(nb) -> None:
    """What a user reads: no stderr box, nothing shown twice, one chart and at most one progress
    display per cell, and one result line for the training run."""
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        where = f"cell {i}: {cell.source[:60]!r}"
        stderr = [o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not stderr, f"{where} shows a red stderr box: {stderr}"
        shown = [json.dumps(o.get("data", o.get("text")), sort_keys=True) for o in cell.outputs]
        assert len(shown) == len(set(shown)), f"{where} shows the same output twice"
        pngs = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(pngs) <= 1, f"{where} shows {len(pngs)} charts"
        bars = [o for o in cell.outputs if PROGRESS_BAR.search(str(o.get("data", {}).get("text/plain", "")))]
        assert len(bars) <= 1, (f"{where} shows {len(bars)} progress bars: "
                                + "; ".join(o.data["text/plain"][:40] for o in bars))
        said = [json.dumps(o.get("data", o.get("text"))) for o in cell.outputs]
        assert sum(text.count("adapter saved in") for text in said) <= 1, f"{where} says twice where the adapter is"
        notes = [k for k, o in enumerate(cell.outputs) if "note: " in str(o.get("text", ""))]
        assert not (notes and pngs) or max(notes) < cell.outputs.index(pngs[0]), (
            f"{where} prints a note under its chart")
    text = text_of(nb)
    assert text.count("finished 150 steps") == 1, "one result line per train cell"


def test_kernel_interrupt_stops_a_blocking_train_cleanly(llama, parity, tmp_path, kernel_env):
    from jupyter_client.manager import start_new_kernel

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path),
                              env={**os.environ, "LORA_NB_CACHE": os.environ["LORA_NB_CACHE"]})
    try:
        def run(code, timeout=120):
            msg_id = kc.execute(code)
            return kc.get_shell_msg(timeout=timeout) if msg_id else None

        run("%load_ext lora_nb")
        run(f"%lora load {llama}")
        run("%lora inject r=4")
        train_id = kc.execute(f"%lora train data={data} steps=100000 batch_size=4 output_dir={tmp_path / 'run'}")
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.time() + 120
        while (not metrics.exists() or len(metrics.read_text().splitlines()) < 3) and time.time() < deadline:
            time.sleep(0.2)
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]  # the cell ends normally, no traceback
        printed, shown = [], []
        while True:  # everything the cell printed and displayed: it ends with the kernel's idle status for it
            msg = kc.get_iopub_msg(timeout=60)
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])
            if msg["msg_type"] in ("display_data", "update_display_data"):
                shown.append(msg["content"]["data"].get("text/html", ""))
            if (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
                    and msg["parent_header"].get("msg_id") == train_id):
                break
        assert any("stopped at step" in t and "(interrupted), adapter saved in" in t for t in printed), printed
        assert not any("adapter saved in" in html for html in shown), "the live view repeats the result line"
        status = json.loads((tmp_path / "run" / "run.json").read_text())
        assert status["status"] == "interrupted" and status["step"] >= 3
        assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
        reply = run("%lora runs")
        assert reply["content"]["status"] == "ok"  # the kernel is alive and usable
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_the_cell_export_puts_in_runs_in_the_kernel(llama, parity, tmp_path, kernel_env):
    """``%lora export --cell`` puts the script in the next cell; run there, it trains (the kernel's own
    command line, ``-f kernel.json``, is not taken for the script's)."""
    from jupyter_client.manager import start_new_kernel

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in parity[0][:8]))
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path),
                              env={**os.environ, "LORA_NB_CACHE": os.environ["LORA_NB_CACHE"]})
    try:
        def run(code, timeout=300):
            msg_id = kc.execute(code)
            while True:  # older jupyter_clients leave start_new_kernel's kernel_info reply on the channel
                reply = kc.get_shell_msg(timeout=timeout)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"]

        for line in ("%load_ext lora_nb", f"%lora load {llama}", "%lora inject r=4",
                     f"%lora train data={data} steps=2 batch_size=4 max_length=64 output_dir={tmp_path / 'run'}"):
            assert run(line)["status"] == "ok", line
        reply = run("%lora export --cell")
        assert reply["status"] == "ok", reply.get("evalue")
        cell = next(p["text"] for p in reply["payload"] if p["source"] == "set_next_input")
        assert cell.index("\ndef main(") < cell.index("\ndef output_folder(")  # settings, then main(), first
        done = run(cell)
        assert done["status"] == "ok", done.get("evalue")
        assert (tmp_path / "run-script" / "adapter" / "adapter_model.safetensors").is_file()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_background_train_in_a_kernel_shows_controls_under_its_own_cell(llama, parity, tmp_path, kernel_env):
    from jupyter_client.manager import start_new_kernel

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in parity[0]))
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path),
                              env={**os.environ, "LORA_NB_CACHE": os.environ["LORA_NB_CACHE"]})

    def execute(code):
        """Run a cell; return (reply, the outputs published under it)."""
        msg_id = kc.execute(code)
        reply = kc.get_shell_msg(timeout=180)
        outputs = []
        while True:
            msg = kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id:
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return reply, outputs
                outputs.append(msg)

    try:
        execute("%load_ext lora_nb")
        execute(f"%lora load {llama}")
        execute("%lora inject r=4")
        reply, outputs = execute(f"%lora train data={data} steps=100000 batch_size=4 output_dir={tmp_path / 'bg'} "
                                 "--background")
        assert reply["content"]["status"] == "ok"
        kinds = [m["msg_type"] for m in outputs]
        widgets = [m for m in outputs if m["msg_type"] == "display_data"
                   and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]]
        assert widgets, kinds  # Stop / Save now, displayed under the cell that started the run
        assert sum(1 for m in outputs if m["msg_type"] == "display_data"
                   and m["content"].get("transient", {}).get("display_id")) >= 2
        metrics = tmp_path / "bg" / "metrics.jsonl"
        deadline = time.time() + 120
        while (not metrics.exists() or len(metrics.read_text().splitlines()) < 3) and time.time() < deadline:
            time.sleep(0.2)
        reply, _ = execute("%lora stop")
        assert reply["content"]["status"] == "ok"
        reply, outputs = execute("run = %lora wait\nprint(run.status, run.step)")
        printed = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        assert reply["content"]["status"] == "ok" and "stopped" in printed, printed
        assert (tmp_path / "bg" / "adapter" / "adapter_model.safetensors").exists()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
