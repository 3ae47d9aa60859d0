"""Render a Recipe as a standalone training script: transformers, peft, trl and datasets only.

The script repeats what :func:`lora_nb.run` does, call for call: the same load, the same
``LoraConfig`` and ``SFTConfig`` keywords (built by the same functions), the same seed before the
adapter is initialised, and the helpers of :mod:`lora_nb.hf` (model loading, dtype, data formats,
eval split, checkpoints, the version branches of :mod:`lora_nb.hf.compat`) that its recipe's path
calls, copied in. Run with the same seed it logs the same losses, and it runs unchanged under
``accelerate launch``.

The script's code is a template (``script_main.py``: valid Python, linted like the rest) assembled
by :mod:`lora_nb.export.assemble`; the recipe reaches it only as ``NAME = repr(value)`` lines, each
checked to read back as the same literal, so no setting, path or name can inject code.
"""

from __future__ import annotations

import ast
import os
import pprint
from pathlib import Path
from typing import Any

from ..core.version import __version__
from ..core.errors import ConfigError
from ..hf.formats import load_rows, loss_flags
from ..hf.memory_model import step_bytes
from ..recipe.schema import Recipe, adapter_seed, lora_kwargs
from .assemble import END, Template, assemble, read_template


def render_script(recipe: Recipe) -> str:
    """The standalone script for ``recipe`` (see :func:`lora_nb.to_script`): the docstring, the
    imports, the recipe's settings, ``main()``, then only the helpers the recipe's path calls.

    Example:
        >>> script = render_script(Recipe.from_yaml("recipe.yaml"))
        >>> compile(script, "train_lora.py", "exec") is not None, "MODEL = 'my-model'" in script
        (True, True)
    """
    settings = script_settings(recipe)
    run = template("script_main.py")
    code = assemble(_docstring(run), [run], "", settings).split(END, 1)[1]
    read = {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}
    # a setting only the branches the recipe leaves out read (COLUMNS, TRAIN_ON, EARLY_STOPPING unset) goes too
    lines = "".join(_assignment(name, value) for name, value in settings.items() if name in read)
    return assemble(_docstring(run), [run], lines, settings)


def render_sweep_script(points: list[tuple[str, Recipe]], folder: str) -> str:
    """The standalone script for a sweep (see :meth:`lora_nb.experiments.sweeps.sweep.Sweep.to_script`): the
    single-run script's code, its ``main()`` run once per point, into ``folder/<label>``.

    The first point's settings are the script's constants, as in a single-run script; ``POINTS``
    lists each point's label with the constants that differ between points, so the loop only
    ever assigns checked literals. Only the settings every point shares decide branches.

    Example:
        >>> r4, r8 = Recipe.from_yaml("recipe.yaml"), Recipe.from_yaml("recipe.yaml")
        >>> r8.lora.r = 8
        >>> script = render_sweep_script([("r4-s0", r4), ("r8-s0", r8)], "runs/sweep-script")
        >>> compile(script, "sweep_lora.py", "exec") is not None, "POINTS" in script
        (True, True)
    """
    settings = [script_settings(recipe) for _, recipe in points]
    first = settings[0]
    varying = [name for name in first if name != "OUTPUT_DIR" and any(s[name] != first[name] for s in settings)]
    constants = {**first, "OUTPUT_DIR": f"{folder}/{points[0][0]}", "SWEEP_DIR": folder}
    table = [(label, {name: s[name] for name in varying}) for (label, _), s in zip(points, settings)]
    lines = "".join(_assignment(name, value) for name, value in constants.items())
    lines += _assignment("POINTS", table, pretty=True)
    shared = {name: value for name, value in first.items() if name not in varying and name != "OUTPUT_DIR"}
    sweep = template("sweep_main.py")
    return assemble(_docstring(sweep), [sweep, template("script_main.py")], lines, shared)


def template(name: str) -> Template:
    """The parts of one of this package's script templates (``script_main.py``, ``sweep_main.py``).

    Example:
        >>> template("script_main.py").settings[:2]
        ['MODEL', 'MODEL_CLASS']
    """
    return read_template(Path(__file__).with_name(name).read_text(encoding="utf-8"))


def _docstring(part: Template) -> str:
    return part.docstring.replace("{version}", __version__)  # lora_nb's own version, never a recipe value


def script_settings(recipe: Recipe) -> dict:
    """The script's constants, name → value: everything of ``recipe`` the fixed code reads.

    A run given in epochs needs the number of training rows (its length sets the checkpoint and
    eval intervals), so the data is read then, as :func:`lora_nb.train` reads it. A recipe without a
    data format whose data is on this machine gets the format lora_nb detects in it now
    (:func:`_data_format`), so the script needs no detection; for a Hub name, or data not here, the
    script detects it when it runs.

    Example:
        >>> script_settings(Recipe.from_yaml("recipe.yaml"))["OUTPUT_DIR"]
        'lora-run-script'
    """
    from ..model.injection import lora_config_kwargs
    from ..model.loading import quant_kwargs
    from ..training.sft_settings import sft_config_kwargs
    from ..training.stopping import callback_kwargs

    m, d, t = recipe.model, recipe.data, recipe.train
    meta = _meta_model(recipe)
    rows = _train_rows(recipe) if t.steps is None else 0
    sft_config = sft_config_kwargs(t, "", d.eval is not None, rows)
    sft_config.pop("output_dir")  # the script's --output-dir / --resume decide it
    sft_config.pop("resume", None)  # resuming goes through trainer.train(), SFTConfig has no such argument
    if d.train_on == "all":  # every token trains: neither mask of TRL's (lora_nb.hf.formats.loss_flags)
        sft_config.update(loss_flags([], "all"))
    return dict(
        MODEL=m.name, MODEL_CLASS=_class_name(meta), TRUST_REMOTE_CODE=m.trust_remote_code, DTYPE=m.dtype,
        QUANTIZATION=quant_kwargs(m.quant), DEVICE_MAP=m.device_map,
        LORA_CONFIG=lora_config_kwargs(meta, **lora_kwargs(recipe.lora)),
        DATA=d.path, DATA_SPLIT=d.split, DATA_FORMAT=d.format or _data_format(recipe), COLUMNS=d.columns,
        TRAIN_ON=d.train_on, EVAL=d.eval, SEED=t.seed,
        ADAPTER_SEED=adapter_seed(recipe.lora, t), SFT_CONFIG=sft_config,
        # what a step holds per token, where checkpointing is left to the script to decide as it runs
        STEP_BYTES=step_bytes(meta.config) if t.gradient_checkpointing is None else None,
        # a folder of its own: running the script must not overwrite the API run's adapter and checkpoints
        OUTPUT_DIR=f"{recipe.output_dir or 'lora-run'}-script", RESUME=t.resume,
        EARLY_STOPPING=callback_kwargs(t.early_stopping),  # transformers' EarlyStoppingCallback keywords, or None
        MIRROR=t.mirror,  # the run folder copied to MIRROR/<its name> as it is written
    )


def _assignment(name: str, value: Any, pretty: bool = False) -> str:
    """``NAME = <repr>``, refused unless it reads back as the same literal (never an object's repr).
    ``pretty``: spread over lines (pprint) for a long table."""
    text = pprint.pformat(value, width=110, sort_dicts=False) if pretty else repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise ConfigError(name, value, problem="cannot be written into a script as a Python literal")
    return f"{name} = {text}\n"


def _train_rows(recipe: Recipe) -> int:
    """Training rows after the eval split, as datasets' train_test_split counts them."""
    import math

    n = len(load_rows(recipe.data.path, recipe.data.split))
    return n - math.ceil(n * recipe.data.eval) if isinstance(recipe.data.eval, float) else n


def _data_format(recipe: Recipe) -> str | None:
    """The format lora_nb detects in the recipe's data (:func:`lora_nb.data.prepare.detect`), when that
    is a file or folder on this machine that reads; else None (the script detects it as it runs)."""
    from ..core.files import expand_user
    from ..data.columns import apply
    from ..data.prepare import detect

    path = recipe.data.path
    if not isinstance(path, str) or not os.path.exists(expand_user(path)):
        return None
    try:
        return detect(apply(load_rows(path, recipe.data.split), recipe.data.columns))
    except Exception:  # unreadable here: the script reads it, and says why, where it runs
        return None


def _meta_model(recipe: Recipe) -> Any:
    from ..model.discovery import meta_model

    try:
        return meta_model(recipe.model.name, trust_remote_code=recipe.model.trust_remote_code)
    except OSError as e:
        problem = f"export needs the model's config.json to resolve targets ({e.__class__.__name__})"
        raise ConfigError("model.name", recipe.model.name, problem=problem) from None


def _class_name(meta: Any) -> str:
    from ..model.loading import model_class

    cls = model_class(meta.config)
    return cls.__name__
