"""The one orchestrator: a Recipe becomes a loaded model, an adapter and a training run.

The API (``lora_nb.run``), the CLI (``lora-nb run``), a ``%%lora`` recipe cell and the panel's
Train (on the base it has loaded) all come through :func:`run`, so they cannot drift apart: the same load,
the same adapter seeded with ``lora.seed`` (else ``train.seed``), the same training keywords. The exported
script (:func:`to_script`) is rendered from the same recipe by :mod:`lora_nb.export.script`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from ..core.errors import strict_flags
from ..core.quiet import quietly
from ..recipe.arguments import recipe_base
from ..recipe.schema import Recipe, adapter_seed, lora_kwargs, model_kwargs, train_kwargs


def build(recipe: Recipe, base: Optional[tuple] = None):
    """Load the recipe's model and put a fresh adapter on it, seeded with ``lora.seed`` (else ``train.seed``).

    ``base``: an already loaded ``(model, tokenizer)`` to use instead of loading ``recipe.model``
    (the panel reruns experiments on one loaded base); an adapter already on it is replaced.
    Returns ``(model, tokenizer)``.

    Example:
        >>> model, tok = build(Recipe.from_yaml("recipe.yaml"))
        LoRA adapter: 1,792 trainable parameters, 3.828% of the model's 46,816 (attention, r=4)
    """
    from ..model.injection import inject
    from ..model.loading import load

    model, tokenizer = base if base is not None else load(recipe.model.name, **model_kwargs(recipe.model))
    settings = {**lora_kwargs(recipe.lora), "seed": adapter_seed(recipe.lora, recipe.train)}
    # reruns on a loaded base (the panel, a sweep's points) say nothing per adapter: their table does
    return inject(model, **settings, verbose=base is None), tokenizer


@recipe_base
@strict_flags
def run(recipe: Recipe, *, base: Any = None, callbacks: Sequence[Any] = (), background: bool = False,
        progress: Optional[bool] = None, on_model: Optional[Callable[[Any, Any], None]] = None):
    """Load, inject and train as ``recipe`` says: the whole experiment. Returns the training Run.

    ``base``: the base model, instead of ``recipe.model.name``: a loaded ``(model, tokenizer)``, as
    :func:`lora_nb.load` returns, to adapt (see :func:`build`), or a Hub name or folder to load with
    the recipe's quant and dtype.
    ``on_model(model, tokenizer)`` is called once the adapter is on, before training (the
    notebook session keeps them this way).

    Example:
        >>> run = lora_nb.run(lora_nb.Recipe.from_yaml("recipe.yaml"))  # doctest: +ELLIPSIS
        LoRA adapter: 1,792 trainable parameters, 3.828% of the model's 46,816 (attention, r=4)
        finished 2 steps, final loss ..., adapter saved in runs/...-r4-attention-lr2e-4/adapter...
        >>> run.status, run.last("step")
        ('finished', 2)
    """
    from ..training.trackers import check_installed
    from ..training.trainer import train

    check_installed(recipe.train.report_to)  # before the model loads
    model, tokenizer = build(recipe, base)
    if on_model is not None:
        on_model(model, tokenizer)
    return train(model, tokenizer, recipe.data.path, **train_kwargs(recipe), callbacks=callbacks, recipe=recipe,
                 background=background, progress=progress)


@quietly()
def to_script(recipe: Recipe) -> str:
    """A standalone Python script (transformers/peft/trl/datasets only) that runs ``recipe``.

    Run with the same seed it logs the same losses as :func:`run`, and it runs unchanged under
    ``accelerate launch``.

    Example:
        >>> print(lora_nb.to_script(recipe).splitlines()[0].strip('"'))  # doctest: +ELLIPSIS
        LoRA fine-tuning exported by lora_nb ...: the recipe's settings are the constants below.
    """
    from ..export.script import render_script

    return render_script(recipe)
