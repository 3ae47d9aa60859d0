"""TrainerCallbacks that connect TRL's training loop to a :class:`lora_nb.training.Run`.

Imported only when training starts (it imports transformers at the top).
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from .training import METRICS, Run, memory_mb, save_adapter


class RunCallback(TrainerCallback):
    """A TrainerCallback that is handed the :class:`Run` it serves: ``train()`` sets ``self.run``
    before training starts. Live charts and panels build on it.

    Example:
        >>> class PrintLoss(RunCallback):
        ...     def on_log(self, args, state, control, **kw):
        ...         print(self.run.step, self.run.last("loss"))
    """

    run: Optional[Run] = None


class Recorder(TrainerCallback):
    """Fills ``run.history`` (adding tokens/s and memory), appends ``metrics.jsonl`` as it goes,
    and carries out the run's stop and save-now requests at the end of each step."""

    def __init__(self, run: Run, model: Any, tokenizer: Any) -> None:
        self.run, self.model, self.tokenizer = run, model, tokenizer
        self.start = time.time()
        self.last_tokens: Optional[tuple[float, float]] = None
        self.file = open(run.dir / "metrics.jsonl", "a")

    def on_train_begin(self, args, state, control, **kw):
        self.run.max_steps = state.max_steps
        self.start = time.time()

    def on_step_end(self, args, state, control, **kw):
        self.run.step = state.global_step
        if self.run._save_now.is_set():
            self.run._save_now.clear()
            save_adapter(self.run, self.model, self.tokenizer)
        if self.run._stop.is_set():
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "train_runtime" in logs:
            self.run.summary = dict(logs)
            return
        now = time.time()
        row = {"step": state.global_step, "epoch": logs.get("epoch"), "elapsed": round(now - self.start, 3)}
        row.update({k: logs[k] for k in METRICS if k in logs})
        if "num_tokens" in logs:
            if self.last_tokens is not None and now > self.last_tokens[1]:
                row["tokens_per_s"] = (logs["num_tokens"] - self.last_tokens[0]) / (now - self.last_tokens[1])
            self.last_tokens = (logs["num_tokens"], now)
        if "loss" in logs:
            row["memory_mb"] = round(memory_mb(), 1)
        self.run.history.append(row)
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def on_train_end(self, args, state, control, **kw):
        self.file.close()


class LossProgress(ProgressCallback):
    """Trainer's tqdm bar, with the latest loss in the bar instead of a printed dict per log."""

    def on_log(self, args, state, control, logs=None, **kw):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
