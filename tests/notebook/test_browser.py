"""JupyterLab in a real browser: the quickstart notebook runs from the Run menu, the ``%lora panel``
fits a 1400x900 window while it trains with a live chart, stops from its Stop button, sweeps two
values of r (one overlaid chart, the table with the best row marked), shows its runs table styled
in the Runs tab and its script in the Export tab (Copy reaches the clipboard, Save to file writes
it, never over a file), ``%lora export --cell`` puts the script into the next cell, and a blocking
``%lora train`` cell stops cleanly when the kernel is interrupted from the Kernel menu.

Nothing is mocked: a ``jupyter lab`` server, a kernel with this interpreter, headless Chromium
driven by Playwright. It also writes ``docs/panel.png`` (the README's picture of the panel after
its sweep). Needs Debian's Chromium (``apt-get install -y chromium``; ``LORA_NB_CHROMIUM`` names
another binary) and ``pip install playwright`` — never ``playwright install``: no browser download.
On failure a screenshot and the page's visible text are saved under the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

# Outside CI a machine without the browser skips this test; in CI (.ci/run installs both) it must run.
if os.environ.get("CI"):
    from playwright import sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
SCREENSHOT = ROOT / "docs" / "panel.png"
CHROMIUM = os.environ.get("LORA_NB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}

# Generous: the machine may have 2 cores shared with other work.
SERVER_START_S = 180
NOTEBOOK_RUN_S = 900  # builds the tiny model (cold cache), loads it in 4-bit, trains 150 steps, merges
TRAINING_S = 300
STOP_S = 180

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK) and not os.environ.get("CI"),
                                reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter_lab(tmp_path, model_cache):
    """A ``jupyter lab`` server on a free port serving a folder with a copy of the quickstart notebook;
    yields (base url, token, root folder). Stopped (kernels included) at the end, also on failure."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root)
    # Own settings: no "fetch Jupyter news?" toast over the page, no update check, nothing from ~/.jupyter.
    settings = tmp_path / "lab-settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],  # the kernelspec says "python"
           "LORA_NB_CACHE": model_cache,
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime")}
    log_path = tmp_path / "jupyter.log"
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            f"--LabApp.workspaces_dir={root / 'ws'}", f"--LabApp.user_settings_dir={settings}"]
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token, root
    finally:
        print(f"\njupyter lab log: {log_path}")
        stop_server(server, base, token)


def stop_server(server: subprocess.Popen, base: str, token: str) -> None:
    """Ask the server to shut down (it shuts its kernels down first); else terminate, then kill it.
    (A kernel outliving its server exits by itself: ipykernel watches its parent, JPY_PARENT_PID.)"""
    if server.poll() is None:
        try:
            request = urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                             headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(request, timeout=10).close()
        except (urllib.error.URLError, OSError):
            pass
    for end in (None, server.terminate, server.kill):
        if end is not None:
            end()
        try:
            server.wait(timeout=60)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def page():
    """A headless Chromium page, 1400x900, allowed to use the clipboard (the panel's Copy)."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport=VIEWPORT, permissions=["clipboard-read", "clipboard-write"]).new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def save_debug(page, folder: Path) -> None:
    shot, text = folder / "failure.png", folder / "failure.txt"
    try:
        page.screenshot(path=str(shot))
        text.write_text(page.locator("body").inner_text(timeout=10_000))
        print(f"\nfailure screenshot: {shot}\nvisible text of the page: {text}")
    except Exception as e:  # the page itself may be what broke
        print(f"\ncould not save the page for debugging: {e!r}")


def step_at_least(n: int, total: int | str = r"\d+") -> re.Pattern:
    """Matches ``step K/TOTAL`` with K >= n (n < 10)."""
    return re.compile(rf"step (?:[{n}-9]|[1-9]\d+)/{total}\b")


def current_step(text: str) -> int:
    found = re.findall(r"step (\d+)/", text)
    assert found, text
    return int(found[-1])


def menu(page, top: str, command: str, submenu: str = "") -> None:
    """Click a JupyterLab menu item by its command id (labels change between versions, ids less)."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{top}$")).click()
    if submenu:
        page.locator(".lm-Menu:visible .lm-Menu-item[data-type=submenu]", has_text=submenu).click()
    page.locator(f".lm-Menu:visible .lm-Menu-item[data-command='{command}']").click()


def panel_screenshot(page, panel, notebook, path: Path) -> dict:
    """The whole panel, its top scrolled to the top of the notebook, which must show all of it.
    Returns the panel's box."""
    panel.evaluate("e => e.scrollIntoView({block: 'start'})")
    box, view = panel.bounding_box(), notebook.bounding_box()
    assert box["y"] + box["height"] <= view["y"] + view["height"] + 1, \
        f"the panel ({box['height']:.0f} px) does not fit the notebook's {view['height']:.0f} px at {VIEWPORT}"
    left, right = max(box["x"] - 8, view["x"]), min(box["x"] + box["width"] + 8, view["x"] + view["width"])
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), clip={"x": left, "y": box["y"], "width": right - left, "height": box["height"] + 4})
    return box


def test_quickstart_panel_and_interrupt_in_jupyterlab(jupyter_lab, page, tmp_path):
    base, token, root = jupyter_lab
    expect = sync_api.expect
    started = time.monotonic()
    try:
        run_in_browser(page, base, token, root, expect, tmp_path)
    except BaseException:
        save_debug(page, tmp_path)
        raise
    finally:
        print(f"\nbrowser test: {time.monotonic() - started:.0f} s")


def run_in_browser(page, base, token, root, expect, tmp_path) -> None:
    clock = time.monotonic()

    def lap(what: str) -> None:
        nonlocal clock
        print(f"\n{what}: {time.monotonic() - clock:.0f} s", end="")
        clock = time.monotonic()

    # --- open the notebook in a fresh workspace ----------------------------------------------------
    page.goto(f"{base}/lab/workspaces/lora/tree/quickstart.ipynb?reset&token={token}")
    nb_panel = page.locator(".jp-NotebookPanel:visible")
    notebook = nb_panel.locator(".jp-Notebook")
    cells = notebook.locator(".jp-Cell")
    idle = nb_panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    dialog = page.locator(".jp-Dialog")
    idle.or_(dialog).first.wait_for(timeout=SERVER_START_S * 1000)
    if dialog.is_visible():  # "Select Kernel": take the proposed one (the notebook's python3)
        dialog.locator(".jp-mod-accept").click()
    idle.wait_for(timeout=SERVER_START_S * 1000)
    expect(cells).to_have_count(17)
    # JupyterLab rewrites a notebook's kernelspec and language_info from the kernel it connects: the
    # committed ones are what it writes, so the notebook opens unmodified where its Python is the same
    written = json.loads(NOTEBOOK.read_text())["metadata"]["language_info"]["version"]
    if written == platform.python_version():
        page.wait_for_timeout(2000)
        expect(page.locator(".jp-mod-dirty")).to_have_count(0)
    menu(page, "View", "application:toggle-left-area", submenu="Appearance")  # the notebook gets the width
    lap("notebook open, kernel idle")

    # --- run the whole notebook: load, 150 steps of training, ..., %lora panel -------------------
    first_prompt = cells.nth(1).locator(".jp-InputPrompt")  # %load_ext lora_nb
    expect(first_prompt).to_have_text(re.compile(r"\[ \]:"))
    for attempt in range(2):
        menu(page, "Run", "runmenu:run-all")
        try:  # "[*]:" or "[1]:" once the kernel got it
            expect(first_prompt).not_to_have_text(re.compile(r"\[ \]:"), timeout=60_000)
            break
        except AssertionError:  # seen once while exploring: the click right after start-up went nowhere
            assert attempt == 0 and idle.is_visible(), "Run All Cells did not start the notebook"
            print("\nRun All Cells did not start the notebook within 60 s (nothing ran, kernel idle): "
                  "clicking it again")
    panel = page.locator(".lora-nb-panel")  # by its class: a role locator misses what sits in a hidden tab
    error = notebook.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    panel.or_(error).first.wait_for(timeout=NOTEBOOK_RUN_S * 1000)
    assert not error.count(), f"a cell failed:\n{error.first.inner_text()}"
    expect(cells.filter(has_text="finished 150 steps")).to_have_count(1)  # the blocking %lora train cell
    expect(idle).to_be_visible(timeout=60_000)
    lap("Run All Cells, up to the panel")

    # --- the panel: steps=5000, Train, live chart ------------------------------------------------
    status = panel.locator(".widget-html-content").filter(has_text=re.compile(r"\w+ · step \d+/"))
    chart = panel.locator("img.widget-image")
    steps = panel.get_by_label("steps", exact=True)
    steps.fill("5000")
    steps.press("Enter")  # IntText syncs on Enter / blur
    panel.get_by_role("button", name="Train", exact=True).click()
    # 5000: the field reached the kernel
    expect(status).to_contain_text(step_at_least(5, 5000), timeout=TRAINING_S * 1000)
    expect(status).to_contain_text("running")
    first_src, first_step = chart.get_attribute("src"), current_step(status.inner_text())
    # The chart is redrawn as its time budget allows (seconds apart), the status line every second.
    page.wait_for_function("([img, src]) => img.src !== src && img.complete && img.naturalWidth > 0",
                           arg=[chart.element_handle(), first_src], timeout=TRAINING_S * 1000, polling=200)
    expect(status).not_to_contain_text(f"step {first_step}/", timeout=TRAINING_S * 1000)
    assert current_step(status.inner_text()) > first_step
    expect(status).to_contain_text("running")
    expect(status).to_contain_text("fresh adapter")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=chart.element_handle())
    box = panel_screenshot(page, panel, notebook, tmp_path / "training.png")
    lap(f"panel trains, chart redrawn, fits ({box['height']:.0f} px tall)")

    # --- Stop: the run ends after its step, adapter and status saved -----------------------------
    panel.get_by_role("button", name="Stop", exact=True).click()
    expect(status).to_contain_text("adapter saved in", timeout=STOP_S * 1000)
    text = status.inner_text()
    found = re.search(r"stopped at step (\d+), adapter saved in (\S+)", text)
    assert found, text
    run_dir = root / Path(found.group(2)).parent
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists(), sorted(run_dir.rglob("*"))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "stopped" and info["step"] == int(found.group(1)) < 5000, info
    expect(idle).to_be_visible(timeout=60_000)
    lap("Stop")

    # --- Sweep: r = 4, 8 at 10 steps each, in the background; one chart, the table, the best marked --
    steps.fill("10")
    steps.press("Enter")
    values = panel.get_by_placeholder("values, comma-separated").first
    expect(values).to_have_value("4, 8, 16")  # the suggestion for r
    values.fill("4, 8")
    panel.get_by_role("button", name="Sweep", exact=True).click()
    sweep_status = panel.locator(".widget-html-content").filter(has_text="fresh adapters on the loaded base")
    expect(sweep_status).to_contain_text(re.compile(r"point [12]/2 r[48]-s0"), timeout=TRAINING_S * 1000)
    expect(sweep_status).to_contain_text("best:", timeout=TRAINING_S * 1000)
    table = panel.locator("table.lora-nb").filter(has_text="★")  # the sweep's, the best row marked
    expect(table).to_be_visible(timeout=60_000)
    expect(table.locator("tbody tr", has_text="finished")).to_have_count(2)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=chart.element_handle())
    expect(idle).to_be_visible(timeout=60_000)
    assert "sweep point 1/2" not in page.locator("body").inner_text()  # what the sweep prints stays out of the page
    box = panel_screenshot(page, panel, notebook, SCREENSHOT)
    lap(f"Sweep, screenshot ({box['height']:.0f} px tall) in {SCREENSHOT}")

    # --- the Runs tab: the runs table, padded like notebook output --------------------------------
    panel.get_by_role("tab", name="Runs", exact=True).click()
    cell_of_run = panel.locator(f"table.lora-nb td[title*='{run_dir.name}']")  # its start time; the folder on hover
    expect(cell_of_run).to_be_visible(timeout=60_000)  # the table is redrawn once the run has saved
    # the sweep's points too, under their sweep's name
    expect(panel.locator("table.lora-nb td", has_text=re.compile(r"^sweep .*/r8-s0$"))).to_be_visible()
    padding = cell_of_run.evaluate("td => parseFloat(getComputedStyle(td).paddingLeft)")
    assert padding >= 4, f"runs table cells are padded {padding} px"

    # --- Resume: the stopped run goes on from its checkpoint (its base reloaded as recorded); Stop again --
    pick = panel.locator("select").filter(has=page.locator("option", has_text="(stopped)"))
    pick.select_option(label=pick.locator("option", has_text="(stopped)").first.inner_text())
    resume = panel.get_by_role("button", name="Resume", exact=True)
    expect(resume).to_be_enabled(timeout=10_000)
    resume.click()
    stopped_at = info["step"]
    deadline = time.time() + TRAINING_S
    while not ("running" in status.inner_text() and current_step(status.inner_text()) >= stopped_at + 2):
        assert time.time() < deadline, f"the resumed run did not go past step {stopped_at + 1}: {status.inner_text()}"
        page.wait_for_timeout(250)
    panel.get_by_role("button", name="Stop", exact=True).click()
    expect(status).to_contain_text("adapter saved in", timeout=STOP_S * 1000)
    resumed = json.loads((run_dir / "run.json").read_text())
    assert resumed["status"] == "stopped" and resumed["step"] >= stopped_at + 2, resumed
    steps_logged = [row["step"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                    if "loss" in row]
    assert steps_logged == list(range(1, resumed["step"] + 1)), "the resumed run's steps follow on, none twice"
    expect(idle).to_be_visible(timeout=60_000)
    panel_screenshot(page, panel, notebook, SCREENSHOT.with_name("runs_tab.png"))
    lap("Resume")

    # --- the Export tab: the script, Copy to the clipboard, Save to file (never over a file) -------
    panel.get_by_role("tab", name="Export", exact=True).click()
    panel.get_by_role("button", name="Export code", exact=True).click()
    code = panel.locator("textarea.lora-nb-code")
    expect(code).to_have_value(re.compile("SFTConfig"))
    expect(panel).to_contain_text("%lora export --cell")  # a widget cannot add a cell: the panel names what can
    panel.get_by_role("button", name="Copy", exact=True).click()
    expect(panel.locator("textarea.lora-nb-code + br + button + span")).to_contain_text("copied")
    assert "SFTConfig" in page.evaluate("navigator.clipboard.readText()")
    panel.get_by_role("button", name="Save to file", exact=True).click()  # the notebook wrote train_lora.py
    expect(panel).to_contain_text("file exists")
    file_name = panel.get_by_label("file", exact=True)
    file_name.fill("panel_lora.py")
    file_name.press("Enter")
    panel.get_by_role("button", name="Save to file", exact=True).click()
    expect(panel).to_contain_text("wrote panel_lora.py")
    assert "SFTConfig" in (root / "panel_lora.py").read_text()
    lap("Runs and Export tabs")

    # --- %lora export --cell: the script arrives in the next cell ---------------------------------
    n = cells.count()
    cells.nth(n - 1).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    expect(cells).to_have_count(n + 1)
    page.keyboard.press("Enter")
    page.keyboard.insert_text("%lora export --cell")
    page.keyboard.press("Control+Enter")
    expect(cells).to_have_count(n + 2, timeout=60_000)
    # the editor renders only the lines in view: the settings marker is near the top, main() below it
    expect(cells.nth(n + 1).locator(".jp-InputArea-editor")).to_contain_text("# --- settings: the recipe's")
    expect(idle).to_be_visible(timeout=60_000)
    lap("%lora export --cell")

    # --- a blocking %lora train in a new cell, stopped by Kernel > Interrupt Kernel ---------------
    n = cells.count()
    cells.nth(n - 1).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Escape")  # command mode
    page.keyboard.press("b")  # a new cell below, selected
    expect(cells).to_have_count(n + 1)
    cell = cells.nth(n)
    page.keyboard.press("Enter")  # edit mode
    page.keyboard.insert_text("%lora train data={train_path} steps=100000 batch_size=16 max_length=64")
    expect(cell.locator(".jp-InputArea-editor")).to_contain_text("steps=100000")
    page.keyboard.press("Control+Enter")  # run in place
    output = cell.locator(".jp-OutputArea")
    expect(output).to_contain_text(step_at_least(3, 100000), timeout=TRAINING_S * 1000)
    menu(page, "Kernel", "kernelmenu:interrupt")
    expect(output).to_contain_text("(interrupted), adapter saved in", timeout=STOP_S * 1000)
    text = output.inner_text()
    found = re.search(r"stopped at step (\d+) \(interrupted\), adapter saved in (\S+)", text)
    assert found, text
    expect(idle).to_be_visible(timeout=60_000)
    assert not cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count(), text
    interrupted_dir = root / Path(found.group(2)).parent
    assert interrupted_dir != run_dir
    assert (interrupted_dir / "adapter" / "adapter_model.safetensors").exists()
    info = json.loads((interrupted_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and info["step"] == int(found.group(1)) >= 3, info
    lap("new %lora train cell, Kernel > Interrupt Kernel")
