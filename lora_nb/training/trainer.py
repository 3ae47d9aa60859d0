"""Supervised fine-tuning with TRL's SFTTrainer, recorded into a :class:`~lora_nb.runs.record.Run`.

:func:`train` checks every setting, picks the run's folder (new, overwritten on request, or the
run to resume), builds TRL's SFTTrainer and executes it. Stopping — :meth:`Run.stop`, a
TrainerCallback, or Ctrl-C / the kernel's interrupt — ends training at the next step and still
saves the adapter and the history; so does a failure, as far as it can.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..hf.compat import sft_config
from ..core.errors import ConfigError, strict_flags
from ..core.files import atomic_write, expand_user, write_error
from ..core.interrupts import interruptible
from .lints import adapted_shapes, lints, warn_once
from ..model.loading import device_kwargs
from ..hf.folders import last_checkpoint
from ..hf.memory_model import choose_checkpointing
from ..hf.mirror import Mirror
from ..runs.provenance import lora_section, model_section
from ..core.quiet import Capture, captured
from ..recipe.arguments import known_names
from ..recipe.schema import DataSection, Recipe, TrainSection, build_section
from ..runs.folders import never_trained, new_run_dir, remove_new
from ..runs.busy import check_not_training, training
from ..runs.history import read_jsonl
from ..runs.labels import run_label
from ..runs.record import Run
from .execution import execute
from .stopping import stop_callbacks
from .trackers import check_installed, follow_trackers, tracker_keywords
from .sft_settings import check_sft_overrides, paced_saves, saving_notes, sft_config_kwargs, total_steps


@known_names()
@strict_flags
def train(
    model: Any,
    tokenizer: Any,
    data: Any,
    *,
    steps: Optional[int] = TrainSection.steps,
    epochs: Optional[float] = TrainSection.epochs,
    lr: float = TrainSection.lr,
    batch_size: int = TrainSection.batch_size,
    grad_accum: int = TrainSection.grad_accum,
    max_length: int = TrainSection.max_length,
    packing: bool = TrainSection.packing,
    group_by_length: bool = TrainSection.group_by_length,
    scheduler: str = TrainSection.scheduler,
    warmup: float = TrainSection.warmup,
    eval: Any = DataSection.eval,
    eval_steps: Optional[int] = TrainSection.eval_steps,
    logging_steps: int = TrainSection.logging_steps,
    seed: int = TrainSection.seed,
    resume: Optional[str] = TrainSection.resume,
    mirror: Optional[str] = TrainSection.mirror,
    gradient_checkpointing: Optional[bool] = TrainSection.gradient_checkpointing,
    early_stopping: Union[int, dict, None] = TrainSection.early_stopping,
    format: Optional[str] = DataSection.format,
    split: str = DataSection.split,
    columns: Optional[Union[dict, str]] = DataSection.columns,
    train_on: Optional[str] = DataSection.train_on,
    output_dir: Optional[str] = None,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    report_to: Any = TrainSection.report_to,
    recipe: Optional[Recipe] = None,
    progress: Optional[bool] = None,
    background: bool = False,
    **sft_overrides: Any,
) -> Run:
    """Fine-tune ``model`` (a PeftModel from :func:`inject`) on ``data`` with TRL's SFTTrainer.

    ``data``: a json/jsonl/csv/parquet file, a saved dataset folder, a Hub dataset name, a
    ``datasets.Dataset``/``DatasetDict`` or a list of dicts, in text, alpaca, messages or
    prompt/completion format (detected, or named with ``format``), its columns renamed by ``columns``
    (``{instruction: question, output: answer}``); ``train_on`` says which tokens carry loss (last_turn,
    assistant, all: data.train_on; :func:`lora_nb.data.check` shows them). ``eval``: a fraction of the
    rows, a file, or a split name. ``callbacks`` are transformers ``TrainerCallback``s; any other
    keyword goes to ``trl.SFTConfig`` (checked first: a typo names the nearest key). transformers' and
    TRL's names of the settings above work too (``learning_rate``, ``max_steps``,
    ``per_device_train_batch_size``, ``warmup_ratio``...: :mod:`lora_nb.recipe.names`).

    Nothing is lost: the run folder is new (an ``output_dir`` holding files is refused unless
    ``overwrite=True``); a checkpoint is saved every 10% of the steps (no closer than 30 s apart),
    at least every 2 minutes and at the end, and ``run.json`` says how far it got, so a killed kernel loses little and
    ``resume=RUN_DIR`` continues it with the same losses. Training stops cleanly at the next step
    on :meth:`Run.stop` or Ctrl-C, and at the first non-finite loss or gradient (status
    ``diverged``, the last finite adapter kept).

    ``background=True`` trains in a thread and returns the running :class:`Run` at once, so the
    caller (a notebook kernel) stays free to handle Stop / Save-now; :meth:`Run.wait` joins it.

    Quiet: one progress display (a bar with the loss, unless a callback such as the notebook's
    LiveChart shows progress itself: ``progress=None`` decides so) and one result line. The
    libraries' warnings and data-preparation bars go to the run folder's ``log.txt``, counted
    in the result line (:mod:`lora_nb.core.quiet`).

    Example:
        >>> peft_model = lora_nb.inject(lora_nb.load("my-model")[0], r=4, targets="attention", verbose=False)
        >>> run = train(peft_model, tok, "train.jsonl", steps=2, lr=2e-4, eval=0.25)  # doctest: +ELLIPSIS
        finished 2 steps, final loss ..., adapter saved in runs/...-r4-attention-lr2e-4/adapter...
        >>> run.status, run.last("step")
        ('finished', 2)
    """
    with captured(Capture(), progress=False) as log:
        return _train(model, tokenizer, data, log, dict(
            steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
            packing=packing, group_by_length=group_by_length, scheduler=scheduler, warmup=warmup, eval_steps=eval_steps,
            logging_steps=logging_steps, seed=seed, resume=resume, gradient_checkpointing=gradient_checkpointing,
            early_stopping=early_stopping, report_to=report_to, mirror=mirror, sft=dict(sft_overrides)), eval=eval,
            format=format, split=split, columns=columns, train_on=train_on, output_dir=output_dir, overwrite=overwrite,
            callbacks=callbacks, recipe=recipe, progress=progress, background=background)


def _train(model: Any, tokenizer: Any, data: Any, log: Capture, settings: dict, *, eval: Any, format: Optional[str],
           split: str, columns: Any, train_on: Optional[str], output_dir: Optional[str], overwrite: bool,
           callbacks: Sequence[Any], recipe: Optional[Recipe], progress: Optional[bool], background: bool) -> Run:
    from .callbacks import Recorder, RunCallback
    from .prepared import build_trainer
    from ..data.prepare import kept_tokens, prepare
    from ..hf.formats import loss_flags
    from ..hf.models import pin_4bit_layout

    resume, seed = settings["resume"], settings["seed"]
    section = build_section(TrainSection, settings, "train")
    columns = build_section(DataSection, dict(format=format, split=split, columns=columns, train_on=train_on),
                            "data").columns
    if not hasattr(model, "peft_config"):
        raise ConfigError("model", type(model).__name__,
                          problem="has no adapter to train: call lora_nb.inject(model, ...) first")
    check_not_training(model)
    check_sft_overrides(section.sft)
    check_installed(section.report_to)
    folder = new_run_dir(output_dir, overwrite=overwrite, resume=resume,
                         label=run_label(lora_section(model), section.lr, model_section(model).quant))
    mirrored = _check_mirror(section.mirror, folder)
    pin_4bit_layout(model)  # a repack done by an earlier inference would train garbage (see there)
    checkpointing = choose_checkpointing(model, section.gradient_checkpointing, batch_size=section.batch_size,
                                         max_length=section.max_length)
    train_rows, eval_rows, fmt = prepare(data, tokenizer, format=format, split=split, eval=eval, train_on=train_on,
                                         seed=seed, max_length=kept_tokens(section),  # a 10 MB row: cut, tokenised
                                         columns=columns)

    try:  # built before anything is written: SFTConfig's own checks (a choice, a combination) come first
        config = sft_config({**device_kwargs(model), "activation_checkpointing": checkpointing,
                             **loss_flags(train_rows.column_names, train_on),
                             **tracker_keywords(section.report_to, str(folder)),
                             **sft_config_kwargs(section, str(folder / "checkpoints"), eval_rows is not None,
                                                 len(train_rows))})
    except (TypeError, ValueError) as e:  # a ConfigError of lora_nb's own (early stopping without eval data) as it is
        raise e if isinstance(e, ConfigError) else ConfigError(
            "train.sft", problem=f"SFTConfig refuses these settings: {str(e).strip().splitlines()[0]}") from None
    run = Run(folder)
    run.checkpointing = checkpointing
    run.mirror = None if mirrored is None else str(mirrored.parent)
    run.rows = {"train": len(train_rows), "eval": len(eval_rows) if eval_rows is not None else 0}
    before = set(folder.iterdir()) if folder.is_dir() else None
    mirror = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _clear_for(run, resume=resume, overwrite=overwrite)
        if not resume:
            run.mark_preparing()
        log.to(run.dir / "log.txt")
        run.recipe = recipe or Recipe(model=model_section(model), lora=lora_section(model),
                                      data=DataSection(path=_data_path(data, run), format=fmt, split=split,
                                                       train_on=train_on, eval=_eval_setting(eval, run),
                                                       columns=columns),
                                      train=section, output_dir=str(run.dir))
        use_cache = getattr(model.config, "use_cache", None)
        mirror = None if mirrored is None else Mirror(run.dir, mirrored)
        recorder = Recorder(run, model, tokenizer, paced=paced_saves(section.sft) and not section.early_stopping,
                            mirror=mirror)
        with interruptible():  # TRL tokenises with Dataset.map, whose fingerprinting can swallow a Ctrl-C
            trainer, run.reused_rows = build_trainer(model, config, train_rows, eval_rows, tokenizer,
                                                     [recorder, *stop_callbacks(section, resume), *callbacks])
        # Trainer writes args.use_cache (False) into the model's config, where it would outlive the run: generating
        # afterwards, and a merged model's config.json, would go without a KV cache. TRL passes use_cache=False to
        # each training forward itself.
        if use_cache is not None:
            model.config.use_cache = use_cache
        if len(trainer.train_dataset) == 0:
            raise ConfigError("train.max_length", section.max_length, problem="leaves no example with a token to "
                              "learn from (every response was cut off); raise max_length")
    except BaseException as e:  # a failure or Ctrl-C before training: nothing this call wrote is left behind
        log.to(None)
        if mirror is not None:
            mirror.close()
        remove_new(folder, before)
        failure = write_error(e, getattr(e, "filename", None) or folder, "output_dir")
        if failure is not None:
            raise failure from None
        raise
    if not resume:
        atomic_write(run.dir / "recipe.yaml", run.recipe.to_yaml())
    warn_once(_lints(model, section, trainer, len(train_rows), eval_rows is not None))
    if progress is None:  # a live view shows progress itself; otherwise one bar
        progress = not any(getattr(c, "shows_progress", False) for c in callbacks)
    _tune_progress(trainer, progress)
    follow_trackers(trainer, section.report_to, str(run.dir))
    for callback in callbacks:
        if isinstance(callback, RunCallback):
            callback.run = run
            callback.on_ready()
    checkpoint = last_checkpoint(run.dir) if resume else None
    training(model, run)
    if background:
        def target() -> None:
            with log.joined():
                execute(run, trainer, model, tokenizer, checkpoint, log, mirror)
        run.start(target)
        return run
    execute(run, trainer, model, tokenizer, checkpoint, log, mirror)
    if run.error is not None:
        raise run.error
    return run


def _check_mirror(mirror: Optional[str], folder: Path) -> Optional[Path]:
    """Where train.mirror copies the run folder (``MIRROR/<run name>``), checked writable before training."""
    from ..hf.mirror import check_mirror

    if not mirror:
        return None
    try:
        return check_mirror(mirror, folder)
    except OSError as e:
        raise ConfigError("train.mirror", mirror, problem=f"cannot be written ({e.strerror or e}): name a folder "
                          "you can write to (a mounted Drive: /content/drive/MyDrive/lora_runs)") from None
    except ValueError as e:
        raise ConfigError("train.mirror", mirror, problem=str(e)) from None


def _lints(model: Any, section: TrainSection, trainer: Any, rows: int, has_eval: bool) -> list[str]:
    """The run's likely mistakes (:mod:`lora_nb.training.lints`), read off the model and TRL's prepared data."""
    cut = 0
    if not section.packing:  # TRL truncated to max_length and dropped the rows left with nothing to learn
        sample = trainer.train_dataset.select(range(min(len(trainer.train_dataset), 2000)))
        at_limit = sum(len(ids) >= section.max_length for ids in sample["input_ids"])
        cut = rows - len(trainer.train_dataset) + round(at_limit * len(trainer.train_dataset) / max(1, len(sample)))
    return lints(lora=lora_section(model), lr=section.lr, has_eval=has_eval, adapted=adapted_shapes(model),
                 max_length=section.max_length, cut=cut, rows=rows, warmup=section.warmup,
                 steps=total_steps(section, rows)) + saving_notes(section.sft)


def _clear_for(run: Run, *, resume: Optional[str], overwrite: bool) -> None:
    """Make the folder's metrics match the run about to start: a resumed run keeps the rows up
    to its checkpoint's step; an overwritten one starts empty."""
    metrics = run.dir / "metrics.jsonl"
    if resume:
        step = json.loads((Path(last_checkpoint(run.dir)) / "trainer_state.json").read_text())["global_step"]
        run.history = [row for row in read_jsonl(metrics) if row.get("step", 0) <= step]
        atomic_write(metrics, "".join(json.dumps(row) + "\n" for row in run.history))
        run.step = run.saved_step = step
    elif never_trained(run.dir):  # all of it was written by a call killed before training
        remove_new(run.dir, set())
    elif overwrite:
        shutil.rmtree(run.dir / "checkpoints", ignore_errors=True)
        metrics.unlink(missing_ok=True)


def _tune_progress(trainer: Any, progress: bool) -> None:
    """One quiet progress bar: Trainer's (the terminal one, or in a kernel its HTML table with a
    row per log) gives way to a tqdm bar with the loss in it, or to nothing when a live view shows
    progress instead."""
    from transformers.trainer_callback import ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    from .callbacks import LossProgress

    had = [trainer.pop_callback(cls) for cls in (ProgressCallback, NotebookProgressCallback)]
    if progress and any(c is not None for c in had):
        trainer.add_callback(LossProgress())


def _data_path(data: Any, run: Run) -> str:
    """Where the recipe can find ``data`` again: its path, or a copy written into the run folder."""
    if isinstance(data, (str, os.PathLike)):
        return expand_user(data)  # the recipe (and an exported script) holds the real path
    from ..data.prepare import read

    path = run.dir / "train.jsonl"
    read(data).to_json(str(path))
    return str(path)


def _eval_setting(eval: Any, run: Run) -> Union[float, str, None]:
    if eval is None or isinstance(eval, float):
        return eval
    if isinstance(eval, (str, os.PathLike)):
        return expand_user(eval)
    from ..data.prepare import read

    path = run.dir / "eval.jsonl"
    read(eval).to_json(str(path))
    return str(path)
