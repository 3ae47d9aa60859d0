"""Early stopping across a resume: transformers' ``EarlyStoppingCallback`` carrying on its count from a checkpoint.

Shared with exported scripts (:mod:`lora_nb.export.script`): standard library and the HF stack only.
"""

from __future__ import annotations

import json
import os
from typing import Any


def early_stopping(settings: dict, checkpoint: str | None = None) -> Any:
    """transformers' ``EarlyStoppingCallback(**settings)``; resuming from ``checkpoint``, with its count of evals
    without improvement as that checkpoint's trainer_state.json saved it. (transformers restores it only under
    ``restore_callback_states_from_checkpoint``, which restores the trainer's control flags as that step saved
    them too: a run stopped by hand saved its stop request there.)

    Example:
        >>> early_stopping({"early_stopping_patience": 3}).early_stopping_patience_counter
        0
    """
    from transformers import EarlyStoppingCallback

    callback = EarlyStoppingCallback(**settings)
    if checkpoint is not None:
        with open(os.path.join(checkpoint, "trainer_state.json")) as f:
            saved = json.load(f).get("stateful_callbacks", {}).get("EarlyStoppingCallback")
        for state in saved if isinstance(saved, list) else [saved] if saved else []:
            callback.early_stopping_patience_counter = state["attributes"]["early_stopping_patience_counter"]
    return callback
