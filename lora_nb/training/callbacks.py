"""TrainerCallbacks that connect TRL's training loop to a :class:`lora_nb.runs.record.Run`.

Imported only when training starts (it imports transformers at the top).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

from ..core.errors import strict_flags
from ..core.progress import progress_bar
from ..core.quiet import captured

with captured():  # the one module importing the libraries at its top (a live chart's): what they say goes to the log
    import torch
    from torch.nn.utils import get_total_norm
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..runs.history import LOGGED, memory_mb
from ..runs.record import Run


class RunCallback(TrainerCallback):
    """A TrainerCallback that is handed the :class:`Run` it serves: ``train()`` sets ``self.run``
    before training starts. Live charts and panels build on it.

    Example:
        >>> class PrintLoss(RunCallback):
        ...     def on_log(self, args, state, control, **kw):
        ...         print(self.run.step, self.run.last("loss"))
    """

    run: Optional[Run] = None

    def on_ready(self) -> None:
        """Called by ``train()`` in the caller's thread once every setting is checked and the run's
        notes are printed, just before training starts (in the background or not): a view that
        shows itself here comes below those notes, and never above an error."""


# A checkpoint at least this often (seconds), besides every 10% of the steps: a killed kernel
# loses at most a couple of minutes of training.
SAVE_EVERY_S = 120.0

# The 10% cadence saves no more often than this (seconds): on a short run it would save adapter and optimizer
# state every step or two, for minutes of work a crash could not lose (the last step still saves, as TRL does).
SAVE_GAP_S = 30.0


def all_finite(tensors: list) -> bool:
    """Whether every element of ``tensors`` is finite: one fused norm and one device sync (7x cheaper
    than a check per tensor, which cost 1-3% of a small model's step), then, only where that norm is
    not finite, a check per tensor: a norm's squares overflow fp32 above ~1.8e19, so huge but finite
    gradients read as non-finite in the norm alone.

    Example:
        >>> all_finite([torch.tensor([3e19]), torch.ones(2)]), all_finite([torch.tensor([float("nan")])])
        (True, False)
    """
    if torch.isfinite(get_total_norm(tensors)).item():
        return True
    return all(torch.isfinite(t).all().item() for t in tensors)


class Recorder(TrainerCallback):
    """Keeps the :class:`Run` and its folder in step with training.

    Fills ``run.history`` (adding tokens/s and memory) and appends ``metrics.jsonl`` as it goes;
    after each checkpoint swaps the adapter in and writes ``run.json`` (status running, last
    saved step); asks for a checkpoint every :data:`SAVE_EVERY_S` seconds and, where lora_nb sets
    the cadence (``paced``), skips the 10% cadence's saves that come within :data:`SAVE_GAP_S` of
    the last one; carries out the run's stop and save-now requests at the end of a step; and stops
    at the first non-finite loss or gradient, before that gradient reaches the weights.
    """

    @strict_flags
    def __init__(self, run: Run, model: Any, tokenizer: Any, paced: bool = False, mirror: Any = None) -> None:
        self.run, self.model, self.tokenizer, self.paced = run, model, tokenizer, paced
        self.mirror = mirror  # a lora_nb.hf.mirror.Mirror (train.mirror): each checkpoint and status copied there
        self.start = self.last_save = time.time()
        self.earlier = 0.0  # seconds trained before this call (a resumed run's kept rows)
        self.last_tokens: Optional[tuple[float, float]] = None
        self.trainable: Optional[list] = None
        self.file = open(run.dir / "metrics.jsonl", "a")

    def on_train_begin(self, args, state, control, **kw):
        self.run.max_steps = state.max_steps
        # a resumed run goes on from the time its kept rows took: elapsed and the run's time count every segment
        self.earlier = self.run.last("elapsed") or 0.0
        self.last_save = time.time()
        self.start = self.last_save - self.earlier
        self._write_status()
        if self.mirror is not None:
            self.mirror.file("recipe.yaml")

    def on_pre_optimizer_step(self, args, state, control, **kw):
        if args.fp16:  # a loss-scaled fp16 step has inf gradients by design; the scaler skips it
            return
        if self.trainable is None:  # what trains is fixed once training starts
            self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        params = [p for p in self.trainable if p.grad is not None]
        if params and not all_finite([p.grad for p in params]):
            for p in params:  # the optimizer skips parameters without a gradient: the weights stay finite
                p.grad = None
            self._diverge(state.global_step + 1, "the gradient", args, control)

    def on_step_end(self, args, state, control, **kw):
        self.run.step = state.global_step
        since = time.time() - self.last_save
        if self.paced and since < SAVE_GAP_S and state.global_step < state.max_steps:
            control.should_save = False  # the cadence's save (TrainerCallbacks run after transformers' own)
        if self.run.take_save_request() or since > SAVE_EVERY_S:
            control.should_save = True
        if self.run.stop_requested:
            control.should_training_stop = True
            control.should_save = True  # so resume continues from exactly here

    def on_save(self, args, state, control, **kw):
        self.last_save = time.time()
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"  # written just before
        self.run.save_adapter(self.model, self.tokenizer, checkpoint=checkpoint)
        self.run.saved_step = state.global_step
        if self.mirror is not None:  # copied before run.json, which then says it is saved
            self.mirror.checkpoint(checkpoint.name)
        self._write_status()

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "train_runtime" in logs:
            self.run.summary = dict(logs, train_runtime=logs["train_runtime"] + self.earlier)
            return
        now = time.time()
        row = {"step": state.global_step, "epoch": logs.get("epoch"), "elapsed": round(now - self.start, 3)}
        row.update({k: logs[k] for k in LOGGED if k in logs})
        if "num_tokens" in logs:
            if self.last_tokens is not None and now > self.last_tokens[1]:
                row["tokens_per_s"] = (logs["num_tokens"] - self.last_tokens[0]) / (now - self.last_tokens[1])
            self.last_tokens = (logs["num_tokens"], now)
        if "loss" in logs:
            row["memory_mb"] = round(memory_mb(), 1)
            if not math.isfinite(logs["loss"]):
                self._diverge(state.global_step, "the loss", args, control)
        self.run.history.append(row)
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.mirror is not None:
            self.mirror.file("metrics.jsonl")

    def on_train_end(self, args, state, control, **kw):
        self.file.close()

    def _write_status(self) -> None:
        """run.json, and its copy in the mirror (saying so if the mirror is behind)."""
        if self.mirror is not None:
            self.run.mirror_behind = self.mirror.behind
        self.run.write_status()
        if self.mirror is not None:
            self.mirror.file("run.json")

    def _diverge(self, step: int, what: str, args, control) -> None:
        self.run.diverge(f"{what} became inf or nan. The learning rate ({args.learning_rate:g}) is the "
                         "likely cause: LoRA trains at about 1e-4 to 3e-4.")
        control.should_training_stop = True


class LossProgress(TrainerCallback):
    """One bar for a run, with the latest loss in it (Trainer's own prints a dict per log and nests
    a bar per evaluation): :func:`lora_nb.core.progress.progress_bar`, so a terminal or a notebook shows it
    and a log file gets no wall of redraws."""

    bar: Any = None

    def on_train_begin(self, args, state, control, **kw):
        if state.is_world_process_zero:
            self.bar = progress_bar(total=state.max_steps, initial=state.global_step, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kw):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
