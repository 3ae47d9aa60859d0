"""Runs' adapters worn by one loaded base, for as long as a comparison needs them: each loaded as
a PEFT named adapter beside the model's own, then deleted, the model's active adapter and
trainable flags put back."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

from ..core.errors import ConfigError, first_line
from ..core.files import user_path
from ..runs.adapters import adapter_meta
from ..runs.provenance import model_section, unwrap
from ..runs.record import Run


def run_adapter(run: Union[Run, str, Path]) -> tuple[str, Path]:
    """The column name and adapter folder of ``run``: a :class:`Run`, a run folder (``runs/NAME``,
    or ``NAME`` under ``runs/``) or an adapter folder. A run is named by its folder; a sweep's point
    by its sweep's folder and its point label (``sweep-20261128-101500/lr1e-4``).

    Example:
        >>> run_adapter("runs/20261128-101500-r4-all-linear-lr2e-4")  # doctest: +SKIP
        ('20261128-101500-r4-all-linear-lr2e-4', PosixPath('runs/20261128-101500-r4-all-linear-lr2e-4/adapter'))
    """
    folder = run.dir if isinstance(run, Run) else user_path(run)
    if not isinstance(run, Run) and not folder.exists() and (Path("runs") / folder).exists():
        folder = Path("runs") / folder
    if (folder / "adapter").is_dir():
        adapter = folder / "adapter"
    else:  # an adapter folder: named by its run's folder when it is one's adapter/
        adapter, folder = folder, folder.parent if folder.name == "adapter" else folder
    name = folder.name or str(folder)
    if (folder.parent / "sweep.json").is_file():
        name = f"{folder.parent.name}/{name}"
    return name, adapter


def _same_base(trained_on: str, model: Any) -> bool:
    names = {model_section(model).name, str(getattr(unwrap(model), "name_or_path", "") or "")} - {""}
    if trained_on in names:
        return True
    return Path(trained_on).exists() and any(Path(n).exists() and Path(n).resolve() == Path(trained_on).resolve()
                                             for n in names)


@contextlib.contextmanager
def runs_loaded(model: Any, runs: Sequence[Union[Run, str, Path]]) -> Iterator[list[tuple[str, str]]]:
    """Load each run's adapter onto ``model`` (a PeftModel) as a named adapter and yield
    ``(column name, adapter name)`` pairs; afterwards the adapters are deleted and the model's
    active adapter and each parameter's ``requires_grad`` are as before. A run trained on another
    base is refused with one line naming the run and its base, before anything is loaded.

    Example:
        >>> with runs_loaded(peft_model, ["runs/a", "runs/b"]) as loaded:  # doctest: +SKIP
        ...     for column, adapter in loaded:
        ...         peft_model.set_adapter(adapter)
    """
    if isinstance(runs, (str, Path, Run)) or not runs:
        raise ConfigError("runs", runs if isinstance(runs, (str, Path)) else str(runs),
                          problem="must be a non-empty list of runs, run folders or adapter folders")
    if not hasattr(model, "peft_config"):
        raise ConfigError("model", type(model).__name__, problem="has no adapter; compare runs on the PeftModel "
                          "lora_nb.inject or lora_nb.load_adapter returns (its base answers in the base column)")
    wanted = []
    for run in runs:
        name, folder = run_adapter(run)
        trained_on = adapter_meta(folder, key="runs")["base"]
        if not _same_base(trained_on, model):
            raise ConfigError("runs", name, problem=f"was trained on {trained_on}, not on the loaded base "
                              f"{model_section(model).name}: load that base to compare it")
        taken = [n for n, _ in wanted]
        wanted.append((name if name not in taken else f"{name} ({taken.count(name) + 1})", folder))
    active, grads = model.active_adapter, [(p, p.requires_grad) for p in model.parameters()]
    loaded: list[tuple[str, str]] = []
    try:
        for i, (name, folder) in enumerate(wanted):
            adapter = f"lora_nb_compare_{i}"
            while adapter in model.peft_config:
                adapter += "_"
            try:
                model.load_adapter(str(folder), adapter_name=adapter)
            except (ValueError, TypeError, KeyError, RuntimeError) as e:
                if adapter in model.peft_config:
                    model.delete_adapter(adapter)
                raise ConfigError("runs", name, problem=f"its adapter in {folder} does not fit the loaded base: "
                                  f"{first_line(e, prefer='mismatch')}") from None
            loaded.append((name, adapter))
        yield loaded
    finally:
        model.set_adapter(active)
        for _, adapter in loaded:
            model.delete_adapter(adapter)
        model.set_adapter(active)
        for p, flag in grads:
            p.requires_grad_(flag)
