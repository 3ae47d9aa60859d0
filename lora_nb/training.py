"""Supervised fine-tuning with TRL's SFTTrainer, recorded into a :class:`Run`.

A run's folder holds ``adapter/`` (safetensors + tokenizer), ``recipe.yaml`` (export it as a
script), ``metrics.jsonl`` (one line per log, written as it happens), ``run.json`` (status) and
``loss.png``. Stopping — :meth:`Run.stop`, a TrainerCallback, or Ctrl-C / the kernel's interrupt —
ends training at the next step and still saves the adapter and the history.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
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


def _memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # resource's figure is the peak, not the current size, but close enough
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _recorder(run: Run, model: Any, tokenizer: Any):
    """A TrainerCallback that fills ``run.history``, appends metrics.jsonl, and obeys stop/save requests."""
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.time()
            self.last_tokens: Optional[tuple[float, float]] = None
            self.file = open(run.dir / "metrics.jsonl", "a")

        def on_train_begin(self, args, state, control, **kw):
            run.max_steps = state.max_steps
            self.start = time.time()

        def on_step_end(self, args, state, control, **kw):
            run.step = state.global_step
            if run._save_now.is_set():
                run._save_now.clear()
                save_adapter(run, model, tokenizer)
            if run._stop.is_set():
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "train_runtime" in logs:
                run.summary = dict(logs)
                return
            now = time.time()
            row = {"step": state.global_step, "epoch": logs.get("epoch"), "elapsed": round(now - self.start, 3)}
            row.update({k: logs[k] for k in METRICS if k in logs})
            if "num_tokens" in logs:
                if self.last_tokens is not None and now > self.last_tokens[1]:
                    row["tokens_per_s"] = (logs["num_tokens"] - self.last_tokens[0]) / (now - self.last_tokens[1])
                self.last_tokens = (logs["num_tokens"], now)
            if "loss" in logs:
                row["memory_mb"] = round(_memory_mb(), 1)
            run.history.append(row)
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

        def on_train_end(self, args, state, control, **kw):
            self.file.close()

    return Recorder()


def _quiet_progress():
    """Trainer's tqdm bar, with the latest loss in the bar instead of a printed dict per log."""
    from transformers.trainer_callback import ProgressCallback

    class LossProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    return LossProgress()


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

    from .data import prepare

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
                         processing_class=tokenizer, callbacks=[_recorder(run, model, tokenizer), *callbacks])
    _tune_progress(trainer, progress)
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
        trainer.train()
        run.status = "stopped" if trainer.state.global_step < trainer.state.max_steps else "finished"
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


def _tune_progress(trainer: Any, progress: bool) -> None:
    from transformers.trainer_callback import ProgressCallback

    if trainer.pop_callback(ProgressCallback) is not None and progress:
        trainer.add_callback(_quiet_progress())


def _report(run: Run) -> None:
    where = f"adapter saved in {run.adapter_dir}"
    if run.status in ("stopped", "interrupted"):
        print(f"{run.status} at step {run.step}, {where}")
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
