"""Render a Recipe as a standalone training script: transformers, peft, trl and datasets only.

The script repeats what :func:`lora_nb.run` does, call for call: the same load, the same
``LoraConfig`` and ``SFTConfig`` keywords (built by the same functions), the same seed before the
adapter is initialised, and the shared modules of :mod:`lora_nb.hf` (model loading, dtype, data
formats, eval split, checkpoints) copied in, with the version branches it needs from :mod:`lora_nb.hf.compat`.
Run with the same seed it logs the same losses, and it runs unchanged under ``accelerate launch``.

The script's code is fixed text (``script_main.py`` and the modules of :mod:`lora_nb.hf`); the recipe
reaches it only as ``NAME = repr(value)`` lines, each checked to read back as the same literal, so
no setting, path or name can inject code.
"""

from __future__ import annotations

import ast
import pprint
from itertools import takewhile
from pathlib import Path
from typing import Any

from ..core.version import __version__
from ..core.errors import ConfigError
from ..hf.formats import load_rows
from ..recipe.schema import Recipe, adapter_seed, lora_kwargs


def render_script(recipe: Recipe) -> str:
    """The standalone script for ``recipe`` (see :func:`lora_nb.to_script`).

    Example:
        >>> print(render_script(Recipe.from_yaml("recipe.yaml")))   # doctest: +SKIP
    """
    settings = "".join(_assignment(name, value) for name, value in script_settings(recipe).items())
    head, main = _split(_source("script_main.py"))
    helpers = _helpers(main)
    head = head.format(version=__version__)  # lora_nb's own version: the one placeholder, never a recipe value
    return f"{head}\n{settings}{helpers}{main}"


def render_sweep_script(points: list[tuple[str, Recipe]], folder: str) -> str:
    """The standalone script for a sweep (see :meth:`lora_nb.experiments.sweeps.sweep.Sweep.to_script`): the
    single-run script's code, its ``main()`` run once per point, into ``folder/<label>``.

    The first point's settings are the script's constants, as in a single-run script; ``POINTS``
    lists each point's label with the constants that differ between points, so the loop only
    ever assigns checked literals.

    Example:
        >>> print(render_sweep_script([("r4-s0", r4), ("r8-s0", r8)], "runs/sweep-script"))   # doctest: +SKIP
    """
    settings = [script_settings(recipe) for _, recipe in points]
    first = settings[0]
    varying = [name for name in first if name != "OUTPUT_DIR" and any(s[name] != first[name] for s in settings)]
    constants = {**first, "OUTPUT_DIR": f"{folder}/{points[0][0]}", "SWEEP_DIR": folder}
    table = [(label, {name: s[name] for name in varying}) for (label, _), s in zip(points, settings)]
    lines = "".join(_assignment(name, value) for name, value in constants.items()) + _assignment("POINTS", table, pretty=True)
    sweep_doc, sweep_imports, sweep_code = _parts(_source("sweep_main.py"))
    _, run_imports, run_code = _parts(_source("script_main.py"))
    helpers = _helpers(run_code)
    extra = [line for line in sweep_imports.splitlines(keepends=True) if line not in run_imports.splitlines(keepends=True)]
    head = sweep_doc.format(version=__version__) + run_imports + "".join(extra)  # the version: the one placeholder
    return f"{head}\n{lines}{helpers}{_without_entry_point(run_code)}\n\n{sweep_code}"


def script_settings(recipe: Recipe) -> dict:
    """The script's constants, name → value: everything of ``recipe`` the fixed code reads.

    A run given in epochs needs the number of training rows (its length sets the checkpoint and
    eval intervals), so the data is read then, as :func:`lora_nb.train` reads it.

    Example:
        >>> script_settings(Recipe.from_yaml("recipe.yaml"))["OUTPUT_DIR"]   # doctest: +SKIP
        'runs/first-script'
    """
    from ..model.injection import lora_config_kwargs
    from ..model.loading import quant_kwargs
    from ..training.sft_settings import sft_config_kwargs

    m, d, t = recipe.model, recipe.data, recipe.train
    meta = _meta_model(recipe)
    rows = _train_rows(recipe) if t.steps is None else 0
    sft_config = sft_config_kwargs(t, "", d.eval is not None, rows)
    sft_config.pop("output_dir")  # the script's --output-dir / --resume decide it
    sft_config.pop("resume", None)  # resuming goes through trainer.train(), SFTConfig has no such argument
    return dict(
        MODEL=m.name, MODEL_CLASS=_class_name(meta), TRUST_REMOTE_CODE=m.trust_remote_code, DTYPE=m.dtype,
        QUANTIZATION=quant_kwargs(m.quant), DEVICE_MAP=m.device_map, LORA_CONFIG=lora_config_kwargs(meta, **lora_kwargs(recipe.lora)),
        DATA=d.path, DATA_SPLIT=d.split, DATA_FORMAT=d.format, EVAL=d.eval, SEED=t.seed, ADAPTER_SEED=adapter_seed(recipe.lora, t), SFT_CONFIG=sft_config,
        # a folder of its own: running the script must not overwrite the API run's adapter and checkpoints
        OUTPUT_DIR=f"{recipe.output_dir or 'lora-run'}-script", RESUME=t.resume,
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


# The modules of lora_nb.hf a script carries, in the order they are copied (compat: only what is used).
SHARED = ("devices", "memory_model", "models", "formats", "folders")


def _source(name: str) -> str:
    """The text of a source file of this package (``script_main.py``) or of :mod:`lora_nb.hf` (``hf/NAME.py``):
    a script takes their text, lora_nb never runs script_main."""
    return (Path(__file__).parent.parent / name if "/" in name else Path(__file__).with_name(name)).read_text(encoding="utf-8")


def _helpers(main: str) -> str:
    """What a script copies below its settings: the code of :mod:`lora_nb.hf`'s modules (their docstrings and imports
    stay behind), then those of compat.py's definitions that the script's code uses, with what
    they use in turn."""
    shared = "\n\n".join(_split(_source(f"hf/{name}.py"))[1].strip("\n") + "\n" for name in SHARED)
    _, compat = _split(_source("hf/compat.py"))
    nodes = [(node, _defined(node)) for node in ast.parse(compat).body]
    used, kept = _names(main + shared), set()
    while True:
        more = {i for i, (node, names) in enumerate(nodes) if i not in kept and names & used}
        if not more:
            break
        kept |= more
        used |= set().union(*(_names(ast.unparse(nodes[i][0])) for i in more))
    lines = compat.splitlines(keepends=True)
    # each kept definition with the comment lines just above it, as written
    blocks = []
    for i in sorted(kept):
        node = nodes[i][0]
        start = node.lineno - 1
        while start > 0 and lines[start - 1].startswith("#"):
            start -= 1
        blocks.append("".join(lines[start:node.end_lineno]))
    return shared.rstrip("\n") + "\n\n\n" + "\n\n".join(blocks) if blocks else shared


def _defined(node: ast.stmt) -> set:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    return set()


def _names(code: str) -> set:
    return {n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name)}


def _split(source: str) -> tuple[str, str]:
    """(docstring and imports, the code below them) of a module's text; comments above the
    docstring are left out."""
    tree = ast.parse(source)
    head = list(takewhile(_is_head, tree.body))
    lines = source.splitlines(keepends=True)
    return "".join(lines[tree.body[0].lineno - 1:head[-1].end_lineno]), "".join(lines[head[-1].end_lineno:])


def _parts(source: str) -> tuple[str, str, str]:
    """(docstring, imports, the code below them) of one of the fixed script files."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    head = list(takewhile(_is_head, tree.body))
    docstring, first, last = head[0], head[1], head[-1]
    return ("".join(lines[docstring.lineno - 1:docstring.end_lineno]), "".join(lines[first.lineno - 1:last.end_lineno]),
            "".join(lines[last.end_lineno:]))


def _without_entry_point(code: str) -> str:
    """``code`` without its closing ``if __name__ == "__main__":`` block."""
    last = ast.parse(code).body[-1]
    if isinstance(last, ast.If) and ast.unparse(last.test) == "__name__ == '__main__'":
        return "".join(code.splitlines(keepends=True)[:last.lineno - 1]).rstrip() + "\n"
    return code


def _is_head(node: ast.stmt) -> bool:
    docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    return docstring or isinstance(node, (ast.Import, ast.ImportFrom))


def _meta_model(recipe: Recipe):
    from ..model.discovery import meta_model

    try:
        return meta_model(recipe.model.name, trust_remote_code=recipe.model.trust_remote_code)
    except OSError as e:
        raise ConfigError("model.name", recipe.model.name,
                          problem=f"export needs the model's config.json to resolve targets ({e.__class__.__name__})") from None


def _class_name(meta: Any) -> str:
    from ..model.loading import model_class

    cls = model_class(meta.config)
    return cls.__name__
