"""Early stopping in a run (``train.early_stopping``): the SFTConfig settings it needs, transformers'
``EarlyStoppingCallback``, and what the run records when it ends — the best eval, and why it stopped.

Underneath it is transformers' own machinery: ``load_best_model_at_end`` with ``metric_for_best_model``
(so the adapter saved at the end is the best eval's), checkpoints on the eval steps (transformers loads
the best from its checkpoint, and keeps that checkpoint from ``save_total_limit``).
"""

from __future__ import annotations

from typing import Any, Optional

from ..core.errors import ConfigError
from ..core.files import user_path
from ..hf.folders import last_checkpoint
from ..hf.stopping import early_stopping
from ..recipe.schema import TrainSection
from ..recipe.stopping import greater_is_better
from ..runs.record import Run

# SFTConfig settings early stopping sets: given in train.sft as well, the two would disagree.
SETS = ("load_best_model_at_end", "metric_for_best_model", "greater_is_better", "save_strategy", "save_steps")


def stopping_config(t: TrainSection, eval_steps: Optional[int]) -> dict:
    """SFTConfig keywords for ``t.early_stopping`` (none when it is off), evaluating every ``eval_steps``
    (None: no eval data, which early stopping cannot do without).

    Example:
        >>> stopping_config(TrainSection(early_stopping=2), eval_steps=5)["metric_for_best_model"]
        'eval_loss'
        >>> stopping_config(TrainSection(early_stopping=2), eval_steps=None)
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: data.eval: is needed by train.early_stopping, which stops when the eval \
metric stops improving: set a fraction of the rows (0.1), a file or a split name.
    """
    setting = t.early_stopping
    if not setting:
        return {}
    if eval_steps is None:
        raise ConfigError("data.eval", problem="is needed by train.early_stopping, which stops when the eval metric "
                          "stops improving: set a fraction of the rows (0.1), a file or a split name")
    for key in SETS:
        if key in t.sft:
            raise ConfigError(f"train.sft.{key}", problem="is set by train.early_stopping (checkpoints follow the "
                              "evals, the best is loaded at the end): leave it out")
    return dict(load_best_model_at_end=True, metric_for_best_model=setting["metric"],
                greater_is_better=greater_is_better(setting["metric"]), save_steps=eval_steps)


def callback_kwargs(setting: Optional[dict]) -> Optional[dict]:
    """transformers' ``EarlyStoppingCallback`` keywords for an early stopping setting (None: off).

    Example:
        >>> callback_kwargs({"patience": 3, "metric": "eval_loss", "min_delta": 0.01})
        {'early_stopping_patience': 3, 'early_stopping_threshold': 0.01}
    """
    if not setting:
        return None
    return {"early_stopping_patience": setting["patience"], "early_stopping_threshold": setting["min_delta"]}


def stop_callbacks(t: TrainSection, resume: Optional[str]) -> list:
    """The callbacks ``t.early_stopping`` adds to a run (none when off); resuming the run in folder ``resume``,
    carrying on the count of evals without improvement from its last checkpoint."""
    if not t.early_stopping:
        return []
    return [early_stopping(callback_kwargs(t.early_stopping), last_checkpoint(user_path(resume)) if resume else None)]


def record_stop(run: Run, trainer: Any) -> None:
    """Once training is over: ``run.best`` (the best eval's metric, value and step, whose adapter was loaded
    back), and where early stopping ended the run, ``run.stopped_early`` saying so and the status finished."""
    from transformers import EarlyStoppingCallback

    state = trainer.state
    callback = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)), None)
    if callback is None or state.best_metric is None:
        return
    metric = trainer.args.metric_for_best_model
    run.best = {"metric": metric, "value": state.best_metric, "step": state.best_global_step}
    patience = callback.early_stopping_patience
    if (callback.early_stopping_patience_counter >= patience and state.global_step < state.max_steps
            and not run.stop_requested and not run.divergence):
        run.status = "finished"
        run.stopped_early = (f"stopped early at step {state.global_step} ({metric} did not improve for {patience} "
                             f"eval{'s' if patience > 1 else ''})")


def stop_line(run: Run, where: str) -> str:
    """The result line of a run early stopping ended.

    Example:
        >>> run = Run("runs/example")
        >>> run.stopped_early = "stopped early at step 12 (eval_loss did not improve for 3 evals)"
        >>> run.best = {"metric": "eval_loss", "value": 1.2345, "step": 6}
        >>> stop_line(run, "adapter saved in runs/example/adapter")
        'stopped early at step 12 (eval_loss did not improve for 3 evals); best eval_loss 1.2345 at step 6, its \
adapter saved in runs/example/adapter'
    """
    best = run.best
    return f"{run.stopped_early}; best {best['metric']} {best['value']:.4f} at step {best['step']}, its {where}"
