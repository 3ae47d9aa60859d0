"""The one loaded base a sweep's points share: loading it, checking every point against it before
any trains, and keeping its weights as they were between points."""

from __future__ import annotations

from typing import Any, Sequence

from ...recipe.schema import Recipe
from .plan import Point


def load_base(recipe: Recipe) -> tuple:
    """Load ``recipe.model`` once, for every point: ``(model, tokenizer)``.

    Example:
        >>> model, tok = load_base(recipe)
    """
    from ...model.loading import load
    from ...recipe.schema import model_kwargs

    return load(recipe.model.name, **model_kwargs(recipe.model))


def check_points(points: Sequence[Point], model: Any) -> None:
    """What only the loaded base can tell, checked before any point trains: the targets each
    point's adapter would get, and its extra SFTConfig settings.

    Example:
        >>> from lora_nb.experiments.sweeps.sweep import Sweep
        >>> check_points(Sweep(recipe, r=[4, 8]).points, model)
    """
    from ...model.injection import lora_config_kwargs
    from ...recipe.schema import lora_kwargs
    from ...training.sft_settings import check_sft_overrides

    seen: list = []
    for point in points:
        section = (point.recipe.lora, point.recipe.train.sft)
        if section not in seen:
            seen.append(section)
            lora_config_kwargs(model, **lora_kwargs(point.recipe.lora))
            check_sft_overrides(point.recipe.train.sft)


def trained_base(model: Any) -> list:
    """(parameter, copy) of each base weight the adapter trains in place — biases, with ``lora.bias``
    all or lora_only — so the next point can start from the base as it was.

    Example:
        >>> import torch
        >>> [p.shape for p, _ in trained_base(torch.nn.Linear(2, 3))]
        [torch.Size([3, 2]), torch.Size([3])]
    """
    return [(p, p.detach().clone()) for name, p in model.named_parameters()
            if p.requires_grad and "lora_" not in name and "modules_to_save" not in name]


def restore(trained: list) -> None:
    """Put back the base weights :func:`trained_base` copied (nothing when there are none).

    Example:
        >>> restore([])
    """
    if trained:
        import torch

        with torch.no_grad():
            for param, saved in trained:
                param.copy_(saved)


def reset_peak_memory() -> None:
    """Each point's peak memory is its own: the GPU's peak counter starts again.

    Example:
        >>> reset_peak_memory()
    """
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
