"""A training run as a record: its settings, its history as it grows, its folder, its status.

A run's folder holds ``adapter/`` (safetensors + tokenizer), ``checkpoints/`` (what resuming
needs), ``recipe.yaml`` (export it as a script), ``metrics.jsonl`` (one line per log, written as
it happens), ``run.json`` (status and start time, written atomically), ``loss.png``, and after an
evaluation ``evals.jsonl``. :meth:`Run.load` reads a folder back;
:func:`lora_nb.runs.find.find_runs` reads every run folder back, newest first.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Optional, Union

from ..core.files import atomic_write, replace_folder
from ..core.render import html_table, text_table
from ..recipe.schema import Recipe
from .background import Background
from .history import read_jsonl
from .labels import run_label
from .processes import process_alive, this_process

# In a run folder from its creation until training begins (Run.mark_preparing).
PREPARING = ".lora_nb-preparing.json"


class Run(Background):
    """One training run: its settings, its history as it grows, its folder.

    ``history`` is a list of dicts (step, loss, eval_loss, learning_rate, grad_norm, tokens_per_s,
    memory_mb, elapsed). ``status`` is running, finished, stopped (by :meth:`stop` or a callback),
    interrupted (Ctrl-C), diverged (the loss became NaN or infinite), failed (an error; ``message``
    says which), or killed (read back from a folder whose process died mid-run). A run trained with
    ``background=True`` has the background API (:meth:`stop`, :meth:`wait`, :meth:`on_done`,
    :attr:`running`) of :class:`lora_nb.runs.background.Background`. A run that early stopping ended
    (``train.early_stopping``) is finished, ``stopped_early`` says at which step and why, and ``best`` names
    the eval whose adapter was kept.

    Example:
        >>> peft_model = lora_nb.inject(lora_nb.load("my-model")[0], r=4, verbose=False)
        >>> run = lora_nb.train(peft_model, tok, "data.jsonl", steps=2, max_length=64)  # doctest: +ELLIPSIS
        finished 2 steps, final loss ..., adapter saved in runs/...-r4-all-linear-lr2e-4/adapter...
        >>> run.history[-1]["loss"], run.adapter_dir  # doctest: +ELLIPSIS
        (..., PosixPath('runs/...-r4-all-linear-lr2e-4/adapter'))
    """

    def __init__(self, folder: Union[str, Path], recipe: Optional[Recipe] = None):
        super().__init__()
        self.dir = Path(folder)
        self.recipe = recipe
        self.started = time.time()  # when training started (seconds since the epoch); Run.load reads it back
        self.history: list[dict] = []
        self.status = "running"
        self.max_steps = 0
        self.step = 0
        self.summary: dict = {}
        self.saved_step = 0  # the last step whose adapter and checkpoint are safely on disk
        self.message = ""  # why a run failed, diverged or was killed
        self.checkpointing: Optional[bool] = None  # gradient checkpointing, as train() set or decided it
        self.reused_rows = False  # trained on the tokenised rows of this kernel's previous run (training.prepared)
        self.trainer: Any = None
        self.interrupted = False  # stopped by Ctrl-C / the kernel's interrupt
        self.divergence = ""  # why training diverged, once it has
        self.best: dict = {}  # under early stopping: the best eval's metric, value and step (its adapter is kept)
        self.stopped_early = ""  # "stopped early at step N (eval_loss did not improve for 3 evals)", status finished
        self.rows: dict = {}  # the rows trained and evaluated on, {"train": n, "eval": m} (a model card states them)
        self.mirror: Optional[str] = None  # the folder the run folder is copied into as it is written (train.mirror)
        self.mirror_behind = ""  # why the mirror lacks some of the run's latest files, once a copy failed
        self._save_now = threading.Event()

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def adapter_dir(self) -> Path:
        return self.dir / "adapter"

    @property
    def label(self) -> str:
        """The run's settings in a few characters, e.g. ``r16-attention-lr2e-4`` ("" without a recipe)."""
        r = self.recipe
        return run_label(r.lora, r.train.lr, r.model.quant) if r else ""

    @property
    def eval_score(self) -> Optional[float]:
        """The score of the run's latest evaluation (the last line of ``evals.jsonl``), or None."""
        rows = read_jsonl(self.dir / "evals.jsonl")
        return rows[-1].get("score") if rows else None

    def save_now(self) -> None:
        """Ask for the adapter to be saved after the current step, without stopping."""
        self._save_now.set()

    # --- what the training loop uses (lora_nb.training.callbacks, lora_nb.training.trainer) -------------------

    def take_save_request(self) -> bool:
        """True (once) after :meth:`save_now` was called."""
        asked = self._save_now.is_set()
        self._save_now.clear()
        return asked

    def diverge(self, why: str) -> None:
        """Record the first sign of divergence (a later one says nothing new)."""
        self.divergence = self.divergence or why

    def save_adapter(self, model: Any, tokenizer: Any, checkpoint: Optional[Path] = None) -> None:
        """Save the adapter into :attr:`adapter_dir`, swapped in whole: a kill mid-save keeps the
        previous one. With ``checkpoint`` (the trainer's, just written) its adapter files are linked in."""
        from .adapters import save, save_from_checkpoint

        def fill(tmp: Path) -> None:
            if checkpoint is None or not save_from_checkpoint(model, tmp, checkpoint, tokenizer):
                save(model, tmp, tokenizer=tokenizer, overwrite=True)

        replace_folder(self.adapter_dir, fill)

    def write_status(self) -> None:
        """Write ``run.json`` (status, steps, last saved step, why, and which process) atomically."""
        info = {"status": self.status, "step": self.step, "max_steps": self.max_steps, "saved_step": self.saved_step,
                "message": self.message, "summary": self.summary, "started": self.started, **this_process(),
                "gradient_checkpointing": self.checkpointing, "best": self.best, "stopped_early": self.stopped_early,
                "rows": self.rows}
        if self.mirror:
            info.update(mirror=self.mirror, mirror_behind=self.mirror_behind)
        atomic_write(self.dir / "run.json", json.dumps(info, indent=1))
        (self.dir / PREPARING).unlink(missing_ok=True)  # training has begun: the folder is a run now

    def mark_preparing(self) -> None:
        """Mark the folder as being prepared by this process (until the first :meth:`write_status`),
        so a folder left by a kill before training is known as one that never trained."""
        atomic_write(self.dir / PREPARING, json.dumps(this_process()))

    def last(self, key: str) -> Optional[float]:
        """The latest logged value of ``key`` (e.g. "loss", "eval_loss"), or None.

        Example:
            >>> run = Run.load("runs/20261128-101500")
            >>> run.last("loss") > 0
            True
        """
        return next((h[key] for h in reversed(self.history) if h.get(key) is not None), None)

    def mean(self, key: str) -> Optional[float]:
        """The mean of ``key`` over the logged steps: for ``tokens_per_s`` the run's average speed,
        where :meth:`last` gives only its last step's.

        Example:
            >>> run = Run("runs/example")
            >>> run.history = [{"tokens_per_s": 4.0}, {"tokens_per_s": 8.0}, {"loss": 1.0}]
            >>> run.mean("tokens_per_s"), run.last("tokens_per_s")
            (6.0, 8.0)
        """
        values = [h[key] for h in self.history if h.get(key) is not None]
        return sum(values) / len(values) if values else None

    def figure(self):
        """The loss chart (training loss raw and smoothed, eval loss) as a matplotlib Figure."""
        from ..core.charts import loss_figure

        return loss_figure([(self.name, self.history)], title=f"{self.name} ({self.status})")

    def save_chart(self) -> Path:
        """Write ``loss.png`` into the run folder and return its path."""
        from ..core.charts import save_png

        path = self.dir / "loss.png"
        save_png(self.figure(), path)
        return path

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "Run":
        """Reopen a run from its folder: finished, stopped, or killed (a dead kernel, an OOM kill).

        A run whose process died while training reports status ``killed`` and ``saved_step``, the
        step it can be resumed from with ``train(..., resume=folder)``. A line torn by the kill
        at the end of ``metrics.jsonl`` is skipped.

        Example:
            >>> Run.load("runs/20261128-101500").status
            'finished'
        """
        folder = Path(folder)
        recipe = Recipe.from_yaml(folder / "recipe.yaml") if (folder / "recipe.yaml").exists() else None
        run = cls(folder, recipe)
        run.history = read_jsonl(folder / "metrics.jsonl")
        info = _read_json(folder / "run.json")
        run.status, run.step = info.get("status", "unknown"), info.get("step", 0)
        run.max_steps = info.get("max_steps", 0)
        run.saved_step, run.message = info.get("saved_step", 0), info.get("message", "")
        run.summary, run.checkpointing = info.get("summary", {}), info.get("gradient_checkpointing")
        run.started = info.get("started") or started_time(folder)
        run.best, run.stopped_early = info.get("best", {}), info.get("stopped_early", "")
        run.rows = info.get("rows", {})
        run.mirror, run.mirror_behind = info.get("mirror"), info.get("mirror_behind", "")
        if run.status == "running" and not process_alive(info):
            run.status = "killed"
            run.message = (f"the process training it ended without a word; the last save is step {run.saved_step}"
                           f" (resume='{folder}' continues from there)")
        return run

    def _rows(self) -> list[list[Any]]:
        rows = [["status", self.stopped_early or self.status], ["step", f"{self.step}/{self.max_steps}"]]
        if self.best:
            best = self.best
            rows.append([f"best {best['metric']} (adapter)", f"{best['value']:.4f} at step {best['step']}"])
        if self.status in ("killed", "failed", "diverged"):
            rows += [["last saved step", self.saved_step], ["why", self.message]]
        rows += [[key, self.last(key)] for key in ("loss", "eval_loss") if self.last(key) is not None]
        if self.mean("tokens_per_s") is not None:
            rows.append(["tokens/s (mean)", round(self.mean("tokens_per_s"))])
        if self.summary.get("train_runtime"):
            rows.append(["runtime (s)", round(self.summary["train_runtime"], 1)])
        return rows + [["folder", str(self.dir)]]

    def __str__(self) -> str:
        return text_table(["run", self.name], self._rows())

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, status={self.status!r}, step={self.step})"

    def _repr_html_(self) -> str:
        from ..core.charts import png_img

        chart = png_img(self.figure()) if self.history else ""
        table = html_table(["run", self.name], self._rows())
        return f"<div style='display:flex;gap:1em;align-items:flex-start'>{table}{chart}</div>"


def started_time(folder: Path) -> float:
    """About when a run started, for a folder whose run.json does not say: its recipe's write time
    (written once, at the start), else its first file's.

    Example:
        >>> started_time(Path("runs/20261128-101500")) > 0
        True
    """
    for name in ("recipe.yaml", "metrics.jsonl", "run.json"):
        if (folder / name).exists():
            return (folder / name).stat().st_mtime
    return folder.stat().st_mtime if folder.exists() else 0.0


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
