"""Supervised fine-tuning with TRL's SFTTrainer, recorded into a :class:`Run`.

A run's folder holds ``adapter/`` (safetensors + tokenizer), ``recipe.yaml`` (export it as a
script), ``metrics.jsonl`` (one line per log, written as it happens), ``run.json`` (status) and
``loss.png``. Stopping — :meth:`Run.stop`, a TrainerCallback, or Ctrl-C / the kernel's interrupt —
ends training at the next step and still saves the adapter and the history.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .recipe import DataSection, LoraSection, ModelSection, Recipe, TrainSection, build_section
from .render import html_table, text_table

METRICS = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s", "mean_token_accuracy", "memory_mb")


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
        self.history: list[dict] = []
        self.status = "running"
        self.max_steps = 0
        self.step = 0
        self.summary: dict = {}
        self.error: Optional[BaseException] = None
        self.trainer: Any = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._save_now = threading.Event()
        self._on_done: list = []
        self._interrupted = False

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def adapter_dir(self) -> Path:
        return self.dir / "adapter"

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

    def last(self, key: str) -> Optional[float]:
        """The latest logged value of ``key`` (e.g. "loss", "eval_loss"), or None.

        Example:
            >>> run.last("loss")   # doctest: +SKIP
            0.412
        """
        return next((h[key] for h in reversed(self.history) if h.get(key) is not None), None)

    def figure(self):
        """The loss chart (training loss raw and smoothed, eval loss) as a matplotlib Figure."""
        from .charts import loss_figure

        return loss_figure([(self.name, self.history)], title=f"{self.name} ({self.status})")

    def save_chart(self) -> Path:
        """Write ``loss.png`` into the run folder and return its path."""
        from .charts import save_png

        path = self.dir / "loss.png"
        save_png(self.figure(), path)
        return path

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "Run":
        """Reopen a finished run from its folder.

        Example:
            >>> Run.load("runs/20261128-101500").last("loss")   # doctest: +SKIP
        """
        folder = Path(folder)
        recipe = Recipe.from_yaml(folder / "recipe.yaml") if (folder / "recipe.yaml").exists() else None
        run = cls(folder, recipe)
        metrics = folder / "metrics.jsonl"
        run.history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
        info = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
        run.status, run.step, run.max_steps = info.get("status", "unknown"), info.get("step", 0), info.get("max_steps", 0)
        run.summary = info.get("summary", {})
        return run

    def _rows(self) -> list[list[Any]]:
        rows = [["status", self.status], ["step", f"{self.step}/{self.max_steps}"]]
        rows += [[key, self.last(key)] for key in ("loss", "eval_loss", "tokens_per_s") if self.last(key) is not None]
        if self.summary.get("train_runtime"):
            rows.append(["runtime (s)", round(self.summary["train_runtime"], 1)])
        return rows + [["folder", str(self.dir)]]

    def __str__(self) -> str:
        return text_table(["run", self.name], self._rows())

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, status={self.status!r}, step={self.step})"

    def _repr_html_(self) -> str:
        import base64

        from .charts import save_png

        img = base64.b64encode(save_png(self.figure())).decode() if self.history else ""
        chart = f"<img src='data:image/png;base64,{img}'/>" if img else ""
        return f"<div style='display:flex;gap:1em;align-items:flex-start'>{html_table(['run', self.name], self._rows())}{chart}</div>"


def memory_mb() -> float:
    """Memory in use: the GPU's peak allocation when there is one, else this process's resident size."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def sft_config_kwargs(t: TrainSection, output_dir: str, has_eval: bool, rows: int, report_to: Any = None) -> dict:
    """``trl.SFTConfig`` keywords for a train section: one function for :func:`train` and the exported script.

    Mixed precision is left to the script/run's dtype (``bf16``/``fp16`` are added there).
    """
    steps_per_epoch = max(1, math.ceil(rows / (t.batch_size * t.grad_accum)))
    total = t.steps or math.ceil(steps_per_epoch * (t.epochs or 1))
    kwargs = dict(
        output_dir=output_dir,
        max_steps=t.steps or -1,
        num_train_epochs=t.epochs or 1,
        learning_rate=t.lr,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        packing=t.packing,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup,
        logging_steps=t.logging_steps,
        seed=t.seed,
        save_strategy="steps",
        save_steps=500,
        save_total_limit=2,
        report_to=report_to or "none",
    )
    if has_eval:
        kwargs.update(eval_strategy="steps", eval_steps=t.eval_steps or max(1, total // 10))
    kwargs.update(t.sft)
    return kwargs


def precision_kwargs(model: Any) -> dict:
    """bf16/fp16 mixed precision matching the model's compute dtype (TRL turns bf16 on by default)."""
    import torch

    dtype = getattr(getattr(model, "config", None), "dtype", None)
    bnb = getattr(getattr(model, "config", None), "quantization_config", None)
    compute = getattr(bnb, "bnb_4bit_compute_dtype", None) if bnb is not None else None
    dtype = compute if isinstance(compute, torch.dtype) else dtype
    return dict(bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16)


def new_run_dir(output_dir: Optional[str]) -> Path:
    """``output_dir``, or a fresh ``runs/<timestamp>`` folder."""
    if output_dir:
        return Path(output_dir)
    base = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def model_section(model: Any) -> ModelSection:
    """How ``model`` was loaded: what :func:`lora_nb.load` recorded, else read off the model."""
    recorded = getattr(model, "lora_nb_load", None)
    if isinstance(recorded, ModelSection):
        return recorded
    quant = "4bit" if getattr(model, "is_loaded_in_4bit", False) else "8bit" if getattr(model, "is_loaded_in_8bit", False) else None
    return ModelSection(name=str(getattr(model, "name_or_path", "") or "unknown"), quant=quant)


def lora_section(model: Any) -> LoraSection:
    """The lora settings of a PeftModel's adapter: as given to :func:`lora_nb.inject`, else read back
    from its LoraConfig."""
    recorded = getattr(model, "lora_nb_lora", None)
    if isinstance(recorded, LoraSection):
        return recorded
    cfg = model.peft_config[model.active_adapter]
    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else sorted(cfg.target_modules)
    variant = "dora" if cfg.use_dora else "rslora" if cfg.use_rslora else "lora"
    return LoraSection(r=cfg.r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, targets=targets, variant=variant,
                       bias=cfg.bias, rank_pattern=cfg.rank_pattern or None, alpha_pattern=cfg.alpha_pattern or None,
                       modules_to_save=sorted(cfg.modules_to_save) if cfg.modules_to_save else None)


def save_adapter(run: Run, model: Any, tokenizer: Any) -> None:
    from .merging import save

    save(model, run.adapter_dir, tokenizer=tokenizer)


def _write_status(run: Run) -> None:
    info = {"status": run.status, "step": run.step, "max_steps": run.max_steps, "summary": run.summary}
    (run.dir / "run.json").write_text(json.dumps(info, indent=1))


def train(
    model: Any,
    tokenizer: Any,
    data: Any,
    *,
    steps: Optional[int] = TrainSection.steps,
    epochs: Optional[float] = TrainSection.epochs,
    lr: float = TrainSection.lr,
    batch_size: int = TrainSection.batch_size,
    grad_accum: int = TrainSection.grad_accum,
    max_length: int = TrainSection.max_length,
    packing: bool = TrainSection.packing,
    scheduler: str = TrainSection.scheduler,
    warmup: float = TrainSection.warmup,
    eval: Any = DataSection.eval,
    eval_steps: Optional[int] = TrainSection.eval_steps,
    logging_steps: int = TrainSection.logging_steps,
    seed: int = TrainSection.seed,
    format: Optional[str] = DataSection.format,
    split: str = DataSection.split,
    output_dir: Optional[str] = None,
    callbacks: Sequence[Any] = (),
    report_to: Any = None,
    recipe: Optional[Recipe] = None,
    progress: bool = True,
    background: bool = False,
    **sft_overrides: Any,
) -> Run:
    """Fine-tune ``model`` (a PeftModel from :func:`inject`) on ``data`` with TRL's SFTTrainer.

    ``data``: a json/jsonl/csv/parquet file, a saved dataset folder, a Hub dataset name, a
    ``datasets.Dataset``/``DatasetDict`` or a list of dicts, in text, alpaca, messages or
    prompt/completion format (detected, or named with ``format``). ``eval``: a fraction of the
    rows, a file, or a split name. ``callbacks`` are transformers ``TrainerCallback``s; any other
    keyword goes to ``trl.SFTConfig``. Returns the :class:`Run`; training stops cleanly at the next
    step on :meth:`Run.stop` or Ctrl-C, keeping adapter and history.

    ``background=True`` trains in a thread and returns the running :class:`Run` at once, so the
    caller (a notebook kernel) stays free to handle Stop / Save-now; :meth:`Run.wait` joins it.

    Example:
        >>> run = train(model, tok, "alpaca.jsonl", steps=200, lr=2e-4, eval=0.1)   # doctest: +SKIP
        >>> print(run)                                                              # doctest: +SKIP
    """
    from trl import SFTConfig, SFTTrainer

    from .callbacks import Recorder, RunCallback
    from .data import prepare
    from .loading import pin_4bit_layout

    pin_4bit_layout(model)  # a repack done by an earlier inference would train garbage (see there)

    section = build_section(TrainSection, dict(
        steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
        packing=packing, scheduler=scheduler, warmup=warmup, eval_steps=eval_steps, logging_steps=logging_steps,
        seed=seed, sft=dict(sft_overrides)), "train")
    build_section(DataSection, dict(format=format, split=split), "data")
    train_rows, eval_rows, fmt = prepare(data, tokenizer, format=format, split=split, eval=eval, seed=seed)

    run = Run(new_run_dir(output_dir))
    run.dir.mkdir(parents=True, exist_ok=True)
    run.recipe = recipe or Recipe(model=model_section(model), lora=lora_section(model),
                                  data=DataSection(path=_data_path(data, run), format=fmt, split=split,
                                                   eval=_eval_setting(eval, run)),
                                  train=section, output_dir=str(run.dir))
    run.recipe.to_yaml(run.dir / "recipe.yaml")

    config = SFTConfig(**sft_config_kwargs(section, str(run.dir / "checkpoints"), eval_rows is not None, len(train_rows), report_to),
                       assistant_only_loss="messages" in train_rows.column_names, **precision_kwargs(model))
    trainer = SFTTrainer(model=model, args=config, train_dataset=train_rows, eval_dataset=eval_rows,
                         processing_class=tokenizer, callbacks=[Recorder(run, model, tokenizer), *callbacks])
    _tune_progress(trainer, progress)
    for callback in callbacks:
        if isinstance(callback, RunCallback):
            callback.run = run
    if background:
        run._thread = threading.Thread(target=_execute, args=(run, trainer, model, tokenizer), name=f"lora_nb {run.name}", daemon=True)
        run._thread.start()
        return run
    _execute(run, trainer, model, tokenizer)
    if run.error is not None:
        raise run.error
    return run


def _execute(run: Run, trainer: Any, model: Any, tokenizer: Any) -> None:
    """Train, then save adapter, state, status and chart whatever happened (finished, stopped,
    interrupted or failed)."""
    run.trainer = trainer
    try:
        with _stop_on_interrupt(run):
            trainer.train()
        run.status = "stopped" if trainer.state.global_step < trainer.state.max_steps else "finished"
        if run._interrupted:
            run.status = "interrupted"
    except KeyboardInterrupt:
        run.status = "interrupted"
    except BaseException as e:  # kept on the run; train() re-raises it, a background run's wait() too
        run.status, run.error = "failed", e
    finally:
        run.step = trainer.state.global_step
        save_adapter(run, model, tokenizer)
        trainer.save_state()
        _write_status(run)
        if run.history:
            run.save_chart()
        run.trainer = None
    _report(run)
    for fn in run._on_done:
        fn(run)


@contextmanager
def _stop_on_interrupt(run: Run):
    """Turn Ctrl-C / a kernel interrupt (SIGINT) into a stop at the end of the current step.

    A KeyboardInterrupt raised at an arbitrary point can be swallowed (inside a ``__del__`` or a
    library's cleanup) or leave a step half done; a flag checked between steps cannot. A second
    interrupt stops at once. Only the main thread can take signals: background runs use stop().
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if run._interrupted:
            raise KeyboardInterrupt
        run._interrupted = True
        run.stop()
        print(f"\nstopping after step {run.step + 1}… (interrupt again to stop at once)", flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _tune_progress(trainer: Any, progress: bool) -> None:
    """One quiet progress bar: Trainer's (the terminal one, or in a kernel its HTML table with a
    row per log) gives way to a tqdm bar with the loss in it, or to nothing when a live view shows
    progress instead."""
    from transformers.trainer_callback import ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    from .callbacks import LossProgress

    had = [trainer.pop_callback(cls) for cls in (ProgressCallback, NotebookProgressCallback)]
    if progress and any(c is not None for c in had):
        trainer.add_callback(LossProgress())


def _report(run: Run) -> None:
    where = f"adapter saved in {run.adapter_dir}"
    if run.status in ("stopped", "interrupted"):
        how = " (interrupted)" if run.status == "interrupted" else ""
        print(f"stopped at step {run.step}{how}, {where}")
    else:
        loss = run.last("loss")
        print(f"finished {run.step} steps, final loss {loss:.4f}, {where}" if loss is not None else f"finished, {where}")


def _data_path(data: Any, run: Run) -> str:
    """Where the recipe can find ``data`` again: its path, or a copy written into the run folder."""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    from .data import read

    path = run.dir / "train.jsonl"
    read(data).to_json(str(path))
    return str(path)


def _eval_setting(eval: Any, run: Run) -> Union[float, str, None]:
    if eval is None or isinstance(eval, (float, str)):
        return eval
    from .data import read

    path = run.dir / "eval.jsonl"
    read(eval).to_json(str(path))
    return str(path)


class RunTable:
    """Runs side by side: their settings and final metrics, and their loss curves overlaid.

    Example:
        >>> RunTable([run_a, run_b])   # doctest: +SKIP
    """

    HEADERS = ["run", "status", "steps", "quant", "targets", "r", "alpha", "variant", "lr", "batch",
               "loss", "eval loss", "tokens/s", "seconds"]

    def __init__(self, runs: Sequence[Run]) -> None:
        self.runs = list(runs)

    def rows(self) -> list[list[Any]]:
        out = []
        for run in self.runs:
            r = run.recipe
            lora, train, model = (r.lora, r.train, r.model) if r else (None, None, None)
            targets = lora.targets if lora and isinstance(lora.targets, str) else (", ".join(lora.targets) if lora else None)
            out.append([run.name, run.status, run.step, model.quant if model else None, targets,
                        lora.r if lora else None, lora.alpha if lora else None, lora.variant if lora else None,
                        train.lr if train else None, train.batch_size if train else None,
                        run.last("loss"), run.last("eval_loss"), run.last("tokens_per_s"),
                        round(run.summary["train_runtime"], 1) if run.summary.get("train_runtime") else None])
        return out

    def figure(self):
        from .charts import loss_figure

        return loss_figure([(run.name, run.history) for run in self.runs], title="loss by run")

    def __str__(self) -> str:
        return text_table(self.HEADERS, self.rows()) if self.runs else "no runs yet"

    def _repr_html_(self) -> str:
        import base64

        from .charts import save_png

        if not self.runs:
            return "<p>no runs yet</p>"
        img = base64.b64encode(save_png(self.figure())).decode()
        return html_table(self.HEADERS, self.rows()) + f"<img src='data:image/png;base64,{img}'/>"
