"""The panel's last two tabs: Runs (the runs table over their loss curves; a prompt answered by
Generate, or by base and adapter side by side with Compare, or by base and the runs picked) and
Export (the session as a standalone script: shown with Copy, or saved to a file; the last run pushed
to the Hub with a model card).

A widget cannot add a notebook cell in JupyterLab 4 (``set_next_input`` reaches only the cell being
executed, and outputs' JavaScript cannot reach the notebook without a frontend extension): Export
offers Copy and Save to file, and names ``%lora export --cell``. Each tab is a part of
:class:`~lora_nb.notebook.panel.Panel` (see :mod:`.setup_tabs`).
"""

from __future__ import annotations

import html
import threading
from typing import Any, Optional

import ipywidgets as w

from ...core.charts import png_img
from ...core.errors import ConfigError
from ...core.files import atomic_write, check_free
from ...runs.table import short_names
from .routing import OWNERS
from .widgets import COPY_JS, wide


class RunsTab:
    """The Runs tab: the runs table and their loss curves; Generate and Compare on a prompt."""

    def runs_page(self) -> w.Widget:
        """The tab's controls and page."""
        self.runs, self.result = w.HTML(), w.HTML()
        self.prompt = w.Textarea(placeholder="a prompt for Generate / Compare", layout=wide())
        self.compare_runs = w.SelectMultiple(options=[], rows=3, description="runs", layout=w.Layout(width="20em"),
                                             tooltip="Compare answers with these runs' adapters (none: this adapter)")
        b = self.buttons
        # a killed / interrupted / stopped run: Resume; a run with an adapter: Load adapter (onto the loaded base)
        self.run_pick = w.Dropdown(options=[], description="run", layout=w.Layout(width="26em"))
        self.run_pick.observe(lambda _: self.pick_run(), "value")
        return w.VBox([self.runs, w.HBox([self.run_pick, b["Resume"], b["Load adapter"]]),
                       w.HBox([self.prompt, w.VBox([b["Generate"], b["Compare"]]), self.compare_runs]), self.result])

    def pick_run(self) -> None:
        """Offer what the picked run allows: Resume (unfinished, with a checkpoint), Load adapter (one saved)."""
        from ...experiments.resume import can_resume
        from ...runs.record import Run

        folder = self.run_pick.value
        run = Run.load(folder) if folder else None
        self.buttons["Resume"].disabled = run is None or not can_resume(run)
        self.buttons["Load adapter"].disabled = run is None or not (run.adapter_dir / "adapter_config.json").is_file()

    def resume(self) -> None:
        """Continue the picked run in the background from its last checkpoint, its base reloaded as recorded."""
        from ..live import LiveChart
        from .view import WidgetView

        self.session.require_idle()
        view = WidgetView(self)

        def say(line: str) -> None:
            view.note = html.escape(line)

        run = self.session.resume(self.run_pick.value, live=False, background=True, callbacks=[LiveChart(view=view)],
                                  say=say)
        self.running_controls()  # then on_done greys Stop out again (at once if the run has already ended)
        run.on_done(lambda _: (self.show_runs(), self.running_controls(False)))
        view.announce(f"resuming {html.escape(run.name)}…")

    def load_run_adapter(self) -> None:
        """Put the picked run's adapter on the loaded base (loading the run's base first if none is)."""
        run = self.session.load_adapter(self.run_pick.value)
        self.say(f"loaded the adapter of {html.escape(run.name)} (step {run.saved_step or run.step})")

    def show_runs(self) -> None:
        """The runs table (scrolling past a few runs) above their loss curves, drawn smaller than in a cell."""
        table = self.session.run_table()
        picked, shorts = self.compare_runs.value, short_names(table.runs)
        self.compare_runs.options = [(f"{short} {run.label}", str(run.dir)) for run, short in zip(table.runs, shorts)
                                     if (run.adapter_dir / "adapter_config.json").is_file()]
        self.compare_runs.value = tuple(v for v in picked if v in dict(self.compare_runs.options).values())
        picked_run = self.run_pick.value
        self.run_pick.options = [(f"{short} {run.label} ({run.status})", str(run.dir))
                                 for run, short in zip(table.runs, shorts)]
        self.run_pick.value = picked_run if picked_run in dict(self.run_pick.options).values() else (
            str(table.runs[0].dir) if table.runs else None)
        self.pick_run()
        if not table.runs:
            self.runs.value = "<i>no runs yet</i>"
            return
        self.runs.value = (f"<div class='lora-nb-scroll'>{table.compact_html()}</div>"
                           + png_img(table.figure(compact=True), style="width:560px"))

    def generate(self) -> None:
        answer = self.session.generate(self.prompt.value)
        self.result.value = f"<pre>{html.escape(answer)}</pre>"

    def compare(self) -> None:
        runs = list(self.compare_runs.value) or None  # none picked: base vs the model's adapter
        self.result.value = self.session.compare([self.prompt.value], runs=runs)._repr_html_()


class ExportTab:
    """The Export tab: Export code shows the session's script with Copy; Save to file writes it; Push to
    Hub uploads the last run's adapter with a model card (dry run: builds it and shows the card)."""

    def export_page(self) -> w.Widget:
        """The tab's controls and page."""
        self.export_file = w.Text(value="train_lora.py", description="file", layout=w.Layout(width="22em"))
        self.code = w.HTML()
        self.repo_id = w.Text(placeholder="user/name", description="repo id", layout=w.Layout(width="22em"))
        self.push_dry = w.Checkbox(value=False, description="dry run (upload nothing)", indent=False)
        self.pushing: Optional[threading.Thread] = None  # an upload under way
        b = self.buttons
        return w.VBox([w.HBox([b["Export code"], self.export_file, b["Save to file"]]),
                       w.HBox([b["Push to Hub"], self.repo_id, self.push_dry]), self.code])

    def push(self) -> None:
        """Push the last run: a dry run at once; an upload (seconds to minutes) in a thread, so the kernel
        and the panel stay responsive, with "pushing…" in the status line until it ends, and the button
        greyed out meanwhile."""
        repo = self.repo_id.value.strip()
        if not repo:
            raise ConfigError("repo id", problem="name the Hub repo to push to, e.g. me/my-lora")
        if self.push_dry.value:
            self.show_pushed(self.session.push(repo, dry_run=True))
            return
        button = self.buttons["Push to Hub"]

        def upload() -> None:
            OWNERS[threading.current_thread()] = self  # its warnings show in this panel
            try:
                self.show_pushed(self.session.push(repo))
            except Exception as e:
                self.show_error(e)
            finally:
                button.disabled = False

        button.disabled = True
        self.say(f"pushing the last run to {html.escape(repo)}…")
        self.pushing = threading.Thread(target=upload, name=f"lora_nb push {repo}", daemon=True)
        self.pushing.start()

    def show_pushed(self, result: Any) -> None:
        """A push's one line in the status bar and its model card below."""
        self.say(html.escape(str(result)))
        self.code.value = f"<pre class='lora-nb-code'>{html.escape(result.card)}</pre>"

    def export(self) -> None:
        script = self.session.export()
        self.code.value = (
            f"<div><textarea class='lora-nb-code' rows='18' readonly spellcheck='false' onfocus='this.select()'>"
            f"{html.escape(script)}</textarea><br><button class='jupyter-button widget-button' "
            f"onclick=\"{html.escape(COPY_JS)}\">Copy</button><span></span></div>"
            "<div>A widget cannot add a notebook cell: to put this script in the next cell, run "
            "<code>%lora export --cell</code> in a cell, or Copy and paste it into a new one.</div>")

    def save_script(self) -> None:
        name = self.export_file.value.strip()
        if not name:
            raise ConfigError("file", problem="name the script to write, e.g. train_lora.py")
        script = self.session.export()
        path = atomic_write(check_free(name, "file", option="%lora export FILE --overwrite"), script)
        self.say(f"wrote {html.escape(str(path))} — run it with: accelerate launch {html.escape(str(path))}")
