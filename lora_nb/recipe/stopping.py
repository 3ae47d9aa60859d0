"""``train.early_stopping`` as a setting: a number (the patience) or ``{patience, metric, min_delta}``, checked
and written out whole, with the direction of its metric. Pure data; training applies it
(:mod:`lora_nb.training.stopping`).

Example:
    >>> early_stopping_setting(3)
    {'patience': 3, 'metric': 'eval_loss', 'min_delta': 0.0}
"""

from __future__ import annotations

from typing import Any, Optional

from ..core.errors import ConfigError, check_positive

# What TRL's SFTTrainer logs on each evaluation that can be bettered, and whether higher is better.
METRICS = {"eval_loss": False, "eval_mean_token_accuracy": True}
KEYS = ("patience", "metric", "min_delta")


def early_stopping_setting(value: Any) -> Optional[dict]:
    """``value`` as ``{patience, metric, min_delta}`` (None: off). A bare number is the patience; the metric may
    be named with or without transformers' ``eval_`` prefix; unknown keys are refused.

    Example:
        >>> early_stopping_setting({"patience": 2, "metric": "mean_token_accuracy"})["metric"]
        'eval_mean_token_accuracy'
        >>> early_stopping_setting({"patince": 2})
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: train.early_stopping.patince: unknown key. Allowed: patience, metric, \
min_delta. Did you mean 'patience'?
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        value = {"patience": value}
    for key in value:
        if key not in KEYS:
            raise ConfigError(f"train.early_stopping.{key}", problem="unknown key", allowed=KEYS)
    out = {"patience": value.get("patience", 3), "metric": value.get("metric", "eval_loss"),
           "min_delta": value.get("min_delta", 0.0)}
    check_positive("train.early_stopping.patience", out["patience"],
                   problem="must be a positive whole number of evals (or null: off)")
    metric = out["metric"] if str(out["metric"]).startswith("eval_") else f"eval_{out['metric']}"
    if metric not in METRICS:
        raise ConfigError("train.early_stopping.metric", out["metric"], problem="is not a metric the trainer logs "
                          "on eval", allowed=[*METRICS, *(m.removeprefix("eval_") for m in METRICS)])
    delta = out["min_delta"]
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or delta < 0:
        raise ConfigError("train.early_stopping.min_delta", delta, problem="must be a number, 0 or more")
    return {**out, "metric": metric, "min_delta": float(delta)}


def greater_is_better(metric: str) -> bool:
    """Whether a higher ``metric`` is better (accuracy) or a lower one (loss).

    Example:
        >>> greater_is_better("eval_loss"), greater_is_better("eval_mean_token_accuracy")
        (False, True)
    """
    return METRICS[metric]
