"""A training run as a record: its settings, its history, its folder, and the runs side by side.

A run's folder holds ``adapter/`` (safetensors + tokenizer), ``checkpoints/`` (what resuming
needs), ``recipe.yaml`` (export it as a script), ``metrics.jsonl`` (one line per log, written as
it happens), ``run.json`` (status and start time, written atomically), ``loss.png``, and after an
evaluation ``evals.jsonl``. :func:`find_runs` reads every run folder back, newest first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from ..core.errors import ConfigError
from ..core.files import atomic_write, replace_folder, user_path
from ..recipe.schema import SECTIONS, LoraSection, Recipe
from ..core.render import html_table, text_table

METRICS = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s", "mean_token_accuracy", "memory_mb")


# In a run folder from its creation until training begins (Run.mark_preparing).
PREPARING = ".lora_nb-preparing.json"


class Run:
    """One training run: its settings, its history as it grows, its folder.

    ``history`` is a list of dicts (step, loss, eval_loss, learning_rate, grad_norm, tokens_per_s,
    memory_mb, elapsed). ``status`` is running, finished, stopped (by :meth:`stop` or a callback),
    interrupted (Ctrl-C) or failed.

    Example:
        >>> run = lora_nb.train(model, tok, "data.jsonl", steps=100)   # doctest: +SKIP
        >>> run.history[-1]["loss"], run.adapter_dir                   # doctest: +SKIP
    """

    def __init__(self, folder: Union[str, Path], recipe: Optional[Recipe] = None):
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
        self.error: Optional[BaseException] = None
        self.trainer: Any = None
        self.interrupted = False  # stopped by Ctrl-C / the kernel's interrupt
        self.divergence = ""  # why training diverged, once it has
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._save_now = threading.Event()
        self._on_done: list = []

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

    def stop(self) -> None:
        """Ask training to stop after the current step; the adapter and history are saved.

        Safe to call from another thread (a notebook's Stop button).
        """
        self._stop.set()

    @property
    def background(self) -> bool:
        """True for a run trained in a background thread (``train(background=True)``)."""
        return self._thread is not None

    @property
    def running(self) -> bool:
        """True while a background run's thread is still training."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> "Run":
        """Block until a background run ends (or ``timeout`` seconds pass); re-raise its error if it failed.

        Example:
            >>> run = train(model, tok, data, steps=500, background=True)   # doctest: +SKIP
            >>> run.stop(); run.wait().status                               # doctest: +SKIP
            'stopped'
        """
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None and not self.running:
            raise self.error
        return self

    def on_done(self, fn) -> None:
        """Call ``fn(run)`` once the run has ended and its adapter, history and status are saved.

        Example:
            >>> run.on_done(lambda r: print(r.status))   # doctest: +SKIP
        """
        self._on_done.append(fn)

    def save_now(self) -> None:
        """Ask for the adapter to be saved after the current step, without stopping."""
        self._save_now.set()

    # --- what the training loop uses (lora_nb.training.trainer.callbacks, lora_nb.training.trainer) ----------------------

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`stop` has been called."""
        return self._stop.is_set()

    def take_save_request(self) -> bool:
        """True (once) after :meth:`save_now` was called."""
        asked = self._save_now.is_set()
        self._save_now.clear()
        return asked

    def diverge(self, why: str) -> None:
        """Record the first sign of divergence (a later one says nothing new)."""
        self.divergence = self.divergence or why

    def start(self, target: Callable[[], None]) -> None:
        """Run ``target`` (the training) in a background thread named after the run."""
        self._thread = threading.Thread(target=target, name=f"lora_nb {self.name}", daemon=True)
        self._thread.start()

    def done(self) -> None:
        """Call the :meth:`on_done` callbacks: the run has ended and everything is saved."""
        for fn in self._on_done:
            fn(self)

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
        import socket

        info = {"status": self.status, "step": self.step, "max_steps": self.max_steps, "saved_step": self.saved_step,
                "message": self.message, "summary": self.summary, "started": self.started, "pid": os.getpid(),
                "pid_started": process_started(os.getpid()), "host": socket.gethostname(),
                "gradient_checkpointing": self.checkpointing}
        atomic_write(self.dir / "run.json", json.dumps(info, indent=1))
        (self.dir / PREPARING).unlink(missing_ok=True)  # training has begun: the folder is a run now

    def mark_preparing(self) -> None:
        """Mark the folder as being prepared by this process (until the first :meth:`write_status`),
        so a folder left by a kill before training is known as one that never trained."""
        import socket

        atomic_write(self.dir / PREPARING, json.dumps({"pid": os.getpid(), "pid_started": process_started(os.getpid()),
                                                       "host": socket.gethostname()}))

    def last(self, key: str) -> Optional[float]:
        """The latest logged value of ``key`` (e.g. "loss", "eval_loss"), or None.

        Example:
            >>> run.last("loss")   # doctest: +SKIP
            0.412
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
            >>> Run.load("runs/20261128-101500").last("loss")   # doctest: +SKIP
        """
        folder = Path(folder)
        recipe = Recipe.from_yaml(folder / "recipe.yaml") if (folder / "recipe.yaml").exists() else None
        run = cls(folder, recipe)
        run.history = read_jsonl(folder / "metrics.jsonl")
        info = _read_json(folder / "run.json")
        run.status, run.step, run.max_steps = info.get("status", "unknown"), info.get("step", 0), info.get("max_steps", 0)
        run.saved_step, run.message = info.get("saved_step", 0), info.get("message", "")
        run.summary, run.checkpointing = info.get("summary", {}), info.get("gradient_checkpointing")
        run.started = info.get("started") or _mtime(folder)
        if run.status == "running" and not process_alive(info):
            run.status = "killed"
            run.message = (f"the process training it ended without a word; the last save is step {run.saved_step}"
                           f" (resume='{folder}' continues from there)")
        return run

    def _rows(self) -> list[list[Any]]:
        rows = [["status", self.status], ["step", f"{self.step}/{self.max_steps}"]]
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
        return f"<div style='display:flex;gap:1em;align-items:flex-start'>{html_table(['run', self.name], self._rows())}{chart}</div>"


def memory_mb() -> float:
    """Memory in use: the GPU's peak allocation when there is one, else this process's resident size."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import psutil

    return psutil.Process().memory_info().rss / 2**20



def _mtime(folder: Path) -> float:
    """About when a run started, for a folder whose run.json does not say: its recipe's write time
    (written once, at the start), else its first file's."""
    for name in ("recipe.yaml", "metrics.jsonl", "run.json"):
        if (folder / name).exists():
            return (folder / name).stat().st_mtime
    return folder.stat().st_mtime if folder.exists() else 0.0


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a line torn by a kill in the middle of a write is skipped."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line torn by a kill mid-write
            continue
    return rows


def process_alive(info: dict) -> bool:
    """Whether the process that wrote ``info`` (run.json's ``pid``, ``pid_started``, ``host``) still
    runs; True where this machine cannot tell.

    A pid alone is not enough: once that process has ended the OS may give its number to another
    one, so the process's start time must match the one recorded too."""
    import socket

    pid = info.get("pid")
    if not pid or info.get("host") != socket.gethostname():
        return True
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # alive, but not ours to inspect
        return True
    recorded = info.get("pid_started")
    return recorded is None or abs(started - recorded) < 1.0


def process_started(pid: int) -> Optional[float]:
    """When process ``pid`` started (seconds since the epoch), or None where that cannot be read.

    Example:
        >>> process_started(os.getpid()) > 0
        True
    """
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


# Models training right now (id of the base model -> its Run): a second run or a generate on the
# same weights would fight over train/eval mode and accelerate's state.
_BUSY: dict[int, Run] = {}


def training_run(model: Any) -> Optional[Run]:
    """The Run training ``model`` right now (in this process), or None.

    Example:
        >>> training_run(object()) is None
        True
    """
    from .provenance import unwrap

    return _BUSY.get(id(unwrap(model)))


def training(model: Any, run: Optional[Run]) -> None:
    """Mark ``model`` as trained by ``run`` (None: free again)."""
    from .provenance import unwrap

    if run is None:
        _BUSY.pop(id(unwrap(model)), None)
    else:
        _BUSY[id(unwrap(model))] = run


def run_label(lora: LoraSection, lr: float, quant: Optional[str] = None) -> str:
    """A run's settings in a few characters, for folder names and tables: rank, targets, variant
    (when not plain LoRA), learning rate and quantisation.

    Example:
        >>> run_label(LoraSection(r=16, targets="attention"), 2e-4), run_label(LoraSection(r=8, variant="dora"), 1.5e-4, "4bit")
        ('r16-attention-lr2e-4', 'r8-all-linear-dora-lr1.5e-4-q4')
    """
    targets = lora.targets if isinstance(lora.targets, str) else "+".join(map(str, lora.targets))
    parts = [f"r{lora.r}", re.sub(r"[^A-Za-z0-9_+-]+", "_", targets).strip("_")[:32] or "custom"]
    if lora.variant != "lora":
        parts.append(lora.variant)
    mantissa, exponent = f"{lr:e}".split("e")
    parts.append(f"lr{float(mantissa):g}e{int(exponent)}")
    if quant:
        parts.append("q" + quant.removesuffix("bit"))
    return "-".join(parts)


RUN_KEYS = ("status", "name", "label")


def _filter_keys() -> dict[str, str]:
    """What ``key=value`` in a runs filter can name: the run's status, name and label, and every
    recipe setting, dotted (``lora.r``) or bare where the bare name is unique (``r``, ``lr``)."""
    dotted = {f"{section}.{f.name}": f"{section}.{f.name}" for section, cls in SECTIONS.items()
              for f in dataclasses.fields(cls)}
    bare: dict[str, list[str]] = {}
    for key in dotted:
        bare.setdefault(key.split(".", 1)[1], []).append(key)
    keys = {k: k for k in RUN_KEYS}
    keys.update({name: found[0] for name, found in bare.items() if len(found) == 1 and name not in keys})
    return {**keys, **dotted, "output_dir": "output_dir"}


def find_runs(root: Union[str, Path] = "runs", *, filter: Optional[str] = None, limit: Optional[int] = None,
              runs: Sequence[Run] = ()) -> list[Run]:
    """Every run in ``root``'s folders, newest first: runs of this kernel, of other kernels, of the CLI.

    A run folder holds ``run.json`` or ``metrics.jsonl``: ``root`` itself, a folder in it, or one
    a level further down (a sweep's runs). Each is read with :meth:`Run.load`, so a run whose
    process died shows as ``killed`` and a torn file is skipped (a folder that cannot be read at
    all shows as ``unreadable``). ``runs``: runs held in memory (a notebook session's), listed
    instead of their folder's copy, wherever they are. ``filter``: terms separated by spaces, all
    of which a run must match: ``key=value`` against its status, name, label or a recipe setting
    (``r=16``, ``lora.targets=attention``, ``status=finished``; numbers compare as numbers), or
    text found in its name or label. ``limit``: at most this many, the newest.

    Example:
        >>> [run.name for run in find_runs("runs", filter="r=16 status=finished", limit=5)]   # doctest: +SKIP
        ['20261128-101500-r16-attention-lr2e-4']
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError("limit", limit, problem="must be a positive whole number of runs")
    terms = (filter or "").split()
    keys = _filter_keys()
    for term in terms:
        key = term.split("=", 1)[0]
        if "=" in term and key not in keys:
            raise ConfigError("filter", key, problem="is not a run setting", allowed=keys)
    found = {run.dir.resolve(): run for run in runs}
    for folder in _run_folders(user_path(root)):
        found.setdefault(folder.resolve(), _load_any(folder))
    chosen = [run for run in found.values() if all(_matches(run, term, keys) for term in terms)]
    chosen.sort(key=lambda run: (run.started, run.name), reverse=True)
    return chosen[:limit]


def _run_folders(root: Path, depth: int = 2) -> list[Path]:
    """``root`` if it is a run folder, else the run folders in it, down to ``depth`` folders deep
    (a sweep's runs sit in its folder inside runs/). A folder still marked as being prepared has
    not trained (yet, or ever: a call killed before its first step) and is no run."""
    if (root / "run.json").exists() or (root / "metrics.jsonl").exists():
        return [] if (root / PREPARING).exists() and not (root / "run.json").exists() else [root]
    if depth == 0 or not root.is_dir():
        return []
    return [run for child in sorted(root.iterdir()) if child.is_dir() and not child.name.startswith(".")
            for run in _run_folders(child, depth - 1)]


def _load_any(folder: Path) -> Run:
    """:meth:`Run.load`, or a Run saying why its folder cannot be read (a recipe from another version)."""
    try:
        return Run.load(folder)
    except (ConfigError, OSError) as e:
        run = Run(folder)
        run.status, run.message, run.started = "unreadable", str(e), _mtime(folder)
        return run


def _matches(run: Run, term: str, keys: dict[str, str]) -> bool:
    if "=" not in term:
        return term.lower() in f"{run.name} {run.label}".lower()
    key, want = term.split("=", 1)
    path = keys[key]
    if path in RUN_KEYS:
        value: Any = getattr(run, path)
    elif run.recipe is None:
        return False
    else:
        value = run.recipe
        for part in path.split("."):
            value = getattr(value, part)
    if isinstance(value, list):  # targets=q_proj matches [q_proj, v_proj]; so does targets=q_proj,v_proj
        return want in map(str, value) or want == ",".join(map(str, value))
    return _same(value, want)


def _same(value: Any, want: str) -> bool:
    """``value`` (a setting) equals ``want`` (what was typed): numbers as numbers, the rest as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(want) == float(value)
        except ValueError:
            return False
    if value is None:
        return want.lower() in ("null", "none", "")
    return str(value).lower() == want.lower()


class RunTable:
    """Runs side by side: when they started, their settings, final metrics and eval score, and their
    loss curves overlaid.

    Example:
        >>> RunTable(find_runs("runs", limit=10))   # doctest: +SKIP
    """

    HEADERS = ["run", "started", "label", "status", "steps", "quant", "targets", "r", "alpha", "variant", "lr", "batch",
               "loss", "eval loss", "eval score", "tokens/s", "time"]

    def __init__(self, runs: Sequence[Run]) -> None:
        self.runs = list(runs)

    def rows(self) -> list[list[Any]]:
        out = []
        for run in self.runs:
            r = run.recipe
            lora, train, model = (r.lora, r.train, r.model) if r else (None, None, None)
            targets = lora.targets if lora and isinstance(lora.targets, str) else (", ".join(lora.targets) if lora else None)
            out.append([run.name, _when(run.started), run.label, run.status, run.step, model.quant if model else None,
                        targets, lora.r if lora else None, lora.alpha if lora else None, lora.variant if lora else None,
                        train.lr if train else None, train.batch_size if train else None,
                        run.last("loss"), run.last("eval_loss"), run.eval_score, run.mean("tokens_per_s"),
                        _duration(run.summary.get("train_runtime"))])
        return out

    def figure(self):
        from ..core.charts import loss_figure

        return loss_figure([(run.name, run.history) for run in self.runs], title="loss by run")

    def __str__(self) -> str:
        return text_table(self.HEADERS, self.rows()) if self.runs else "no runs yet"

    def _repr_html_(self) -> str:
        from ..core.charts import png_img

        if not self.runs:
            return "<p>no runs yet</p>"
        return html_table(self.HEADERS, self.rows()) + png_img(self.figure())


def _when(started: float) -> Optional[str]:
    """A start time as people read it: 2026-11-28 10:15."""
    from datetime import datetime

    return datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M") if started else None


def _duration(seconds: Optional[float]) -> Optional[str]:
    """A run's length as people read it: 42 s, 3 min 05 s, 2 h 07 min.

    Example:
        >>> _duration(42.4), _duration(185), _duration(7620)
        ('42 s', '3 min 05 s', '2 h 07 min')
    """
    if seconds is None:
        return None
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
