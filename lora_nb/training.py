"""Supervised fine-tuning with TRL's SFTTrainer, recorded into a :class:`~lora_nb.runs.Run`.

:func:`train` checks every setting, picks the run's folder (new, overwritten on request, or the
run to resume), builds TRL's SFTTrainer and executes it. Stopping — :meth:`Run.stop`, a
TrainerCallback, or Ctrl-C / the kernel's interrupt — ends training at the next step and still
saves the adapter and the history; so does a failure, as far as it can.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .compat import RENAMED_TRAINING_FIELDS, sft_config, sft_config_fields
from .errors import ConfigError, strict_flags
from .files import atomic_write, check_free, expand_user, user_path
from .lints import adapted_shapes, lints, warn_once
from .loading import device_kwargs
from .portable import choose_checkpointing, last_checkpoint
from .provenance import lora_section, model_section
from .quiet import Capture, captured
from .recipe import DataSection, Recipe, TrainSection, build_section
from .runs import PREPARING, Run, process_alive, read_jsonl, run_label, training, training_run


@strict_flags
def sft_config_kwargs(t: TrainSection, output_dir: str, has_eval: bool, rows: int, report_to: Any = None) -> dict:
    """``trl.SFTConfig`` keywords for a train section: one function for :func:`train` and the exported script.

    A checkpoint (adapter, optimizer, scheduler, RNG, step: what resuming needs) is saved at
    least every 10% of the steps; two are kept, so a kill in the middle of a save still leaves a
    complete one. Mixed precision is left to the run's dtype (``bf16``/``fp16`` are added there,
    and an explicit ``sft`` value wins).
    """
    total = total_steps(t, rows)
    kwargs = dict(
        output_dir=output_dir,
        max_steps=t.steps or -1,
        num_train_epochs=t.epochs or 1,
        learning_rate=t.lr,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        packing=t.packing,
        # packed sequences carry no padding to save
        train_sampling_strategy="group_by_length" if t.group_by_length and not t.packing else "random",
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup,
        logging_steps=t.logging_steps,
        seed=t.seed,
        save_strategy="steps",
        save_steps=max(1, total // 10),
        save_total_limit=2,
        report_to=report_to or "none",
    )
    if t.gradient_checkpointing is not None:  # transformers 5 renamed gradient_checkpointing to this
        kwargs["activation_checkpointing"] = t.gradient_checkpointing
    if has_eval:
        kwargs.update(eval_strategy="steps", eval_steps=t.eval_steps or max(1, total // 10))
    kwargs.update(t.sft)
    return kwargs


def total_steps(t: TrainSection, rows: int) -> int:
    """The optimizer steps a train section makes on ``rows`` examples: ``steps``, else its epochs' worth.

    Example:
        >>> total_steps(TrainSection(steps=None, epochs=2, batch_size=4, grad_accum=2), rows=100)
        26
    """
    return t.steps or math.ceil(max(1, math.ceil(rows / (t.batch_size * t.grad_accum))) * (t.epochs or 1))


# SFTConfig keys that lora_nb sets from a train setting: given in ``sft`` they would silently
# disagree with the recipe, so the error names the setting to use instead.
OWNED = {"output_dir": "output_dir", "max_steps": "steps", "num_train_epochs": "epochs", "learning_rate": "lr",
         "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
         "max_length": "max_length", "packing": "packing",
         "group_by_length": "group_by_length",
         "lr_scheduler_type": "scheduler", "warmup_steps": "warmup",
         "logging_steps": "logging_steps", "seed": "seed", "eval_steps": "eval_steps",
         "resume_from_checkpoint": "resume", "gradient_checkpointing": "gradient_checkpointing",
         "activation_checkpointing": "gradient_checkpointing"}
# Keys users bring from older transformers / TRL versions, and what replaced them.
RENAMED = {"max_seq_length": "max_length",
           "evaluation_strategy": "eval_strategy", "dataset_text_field": "a 'text' column (data.format: text)"}


def check_sft_overrides(sft: dict) -> dict:
    """Check extra ``SFTConfig`` settings (``train(**overrides)``, the recipe's ``train.sft``)
    before anything runs: unknown keys get the nearest valid one, renamed keys their new name,
    keys lora_nb sets the setting to use instead.

    Example:
        >>> check_sft_overrides({"max_seq_length": 512})
        Traceback (most recent call last):
        ...
        lora_nb.errors.ConfigError: train.sft.max_seq_length: was renamed: use max_length (transformers 5 / TRL 1).
    """
    fields = sorted(sft_config_fields() | set(RENAMED_TRAINING_FIELDS))  # the newest names work on any release
    for key in sft:
        if key in OWNED:
            raise ConfigError(f"train.sft.{key}", problem=f"is set by lora_nb from {OWNED[key]!r}; set {OWNED[key]}= instead")
        if key in RENAMED:
            raise ConfigError(f"train.sft.{key}", problem=f"was renamed: use {RENAMED[key]} (transformers 5 / TRL 1)")
        if key not in fields:
            raise ConfigError(f"train.sft.{key}", problem="is not an SFTConfig setting", allowed=fields)
    types = sft_field_types()
    for key, value in sft.items():
        if key in types and not _fits(value, types[key]):
            raise ConfigError(f"train.sft.{key}", value, problem=f"must be {_type_name(types[key])}")
    _check_saving(sft)
    if sft.get("padding_free"):
        raise ConfigError("train.sft.padding_free", True, problem="needs max_length=None in TRL (nothing truncated) "
                          "and pays off only with FlashAttention's variable-length kernels: with SDPA it measured half "
                          "the speed on an H200 (benchmarks/results/gpu-h200-2026-11-28.md). Set packing=true instead: "
                          "TRL's packing is padding-free and keeps max_length")
    return sft


# Settings that would switch off what makes a run survive a crash: a complete checkpoint (adapter,
# optimizer, scheduler, RNG) at least every 10% of the steps, two kept so a kill mid-save leaves one.
def _check_saving(sft: dict) -> None:
    why = "would switch off the checkpoints that let a killed run resume where it was"
    strategy = sft.get("save_strategy", "steps")
    if str(getattr(strategy, "value", strategy)) != "steps":
        raise ConfigError("train.sft.save_strategy", strategy, problem=f"{why} (lora_nb saves by steps, at least every "
                          "10% of the run): leave it out, and set save_steps to save more or less often")
    steps = sft.get("save_steps")
    if isinstance(steps, (int, float)) and not isinstance(steps, bool) and steps <= 0:
        raise ConfigError("train.sft.save_steps", steps, problem=f"{why}; give a positive number of steps (or a "
                          "fraction of the run below 1), or leave it out")
    limit = sft.get("save_total_limit", 2)
    if limit is not None and isinstance(limit, int) and limit < 2:
        raise ConfigError("train.sft.save_total_limit", limit, problem="must keep at least 2 checkpoints: a kill in the "
                          "middle of a save then still leaves a complete one")
    if sft.get("save_only_model"):
        raise ConfigError("train.sft.save_only_model", True, problem="leaves the optimizer, scheduler and RNG out of the "
                          "checkpoints, so a resumed run would not continue with the same losses")


def sft_field_types() -> dict[str, Any]:
    """The installed ``SFTConfig``'s field types, by name.

    Example:
        >>> sft_field_types()["weight_decay"]
        <class 'float'>
    """
    import dataclasses

    from trl import SFTConfig

    return {f.name: f.type for f in dataclasses.fields(SFTConfig) if f.init}


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has type ``hint`` (a field's annotation); True where the annotation is not understood."""
    import enum
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    hint = origin or hint
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {m.value for m in hint}
    if isinstance(hint, type) and hint.__module__ == "builtins":
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_name(arg) for arg in typing.get_args(hint)))
    if hint is type(None):
        return "null"
    hint = typing.get_origin(hint) or hint
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text", list: "a list",
            dict: "a mapping"}.get(hint, getattr(hint, "__name__", str(hint)))


@strict_flags
def new_run_dir(output_dir: Optional[str], *, overwrite: bool = False, resume: Optional[str] = None,
                label: str = "") -> Path:
    """The folder a run writes to, checked before anything is written.

    ``resume``: that run's folder (it must hold a complete checkpoint). ``output_dir``: used
    when empty or new; a folder that already holds files is refused unless ``overwrite``.
    Neither: a fresh ``runs/<YYYYmmdd-HHMMSS>-<label>`` folder (``label``: the run's settings,
    :func:`lora_nb.runs.run_label`), numbered when two runs start in the same second.

    Example:
        >>> new_run_dir(None, label="r16-attention-lr2e-4").parent.name   # doctest: +SKIP
        'runs'
    """
    if resume:
        folder = user_path(resume)
        if last_checkpoint(folder) is None:
            raise ConfigError("train.resume", str(folder), problem="holds no complete checkpoint to resume from "
                              "(a run folder has checkpoints/checkpoint-N once its first save is done)")
        return folder
    if output_dir:
        return check_free(output_dir, "output_dir", option="overwrite=True (or resume= to continue that run)",
                          overwrite=overwrite or never_trained(user_path(output_dir)))
    base = Path("runs") / "-".join(filter(None, [datetime.now().strftime("%Y%m%d-%H%M%S"), label]))
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


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
    gradient_checkpointing: Optional[bool] = TrainSection.gradient_checkpointing,
    format: Optional[str] = DataSection.format,
    split: str = DataSection.split,
    output_dir: Optional[str] = None,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    report_to: Any = None,
    recipe: Optional[Recipe] = None,
    progress: Optional[bool] = None,
    background: bool = False,
    **sft_overrides: Any,
) -> Run:
    """Fine-tune ``model`` (a PeftModel from :func:`inject`) on ``data`` with TRL's SFTTrainer.

    ``data``: a json/jsonl/csv/parquet file, a saved dataset folder, a Hub dataset name, a
    ``datasets.Dataset``/``DatasetDict`` or a list of dicts, in text, alpaca, messages or
    prompt/completion format (detected, or named with ``format``). ``eval``: a fraction of the
    rows, a file, or a split name. ``callbacks`` are transformers ``TrainerCallback``s; any other
    keyword goes to ``trl.SFTConfig`` (checked first: a typo names the nearest key).

    Nothing is lost: the run folder is new (an ``output_dir`` holding files is refused unless
    ``overwrite=True``); a checkpoint is saved at least every 10% of the steps and every 2
    minutes, and ``run.json`` says how far it got, so a killed kernel loses little and
    ``resume=RUN_DIR`` continues it with the same losses. Training stops cleanly at the next step
    on :meth:`Run.stop` or Ctrl-C, and at the first non-finite loss or gradient (status
    ``diverged``, the last finite adapter kept).

    ``background=True`` trains in a thread and returns the running :class:`Run` at once, so the
    caller (a notebook kernel) stays free to handle Stop / Save-now; :meth:`Run.wait` joins it.

    Quiet: one progress display (a bar with the loss, unless a callback such as the notebook's
    LiveChart shows progress itself: ``progress=None`` decides so) and one result line. The
    libraries' warnings and data-preparation bars go to the run folder's ``log.txt``, counted
    in the result line (:mod:`lora_nb.quiet`).

    Example:
        >>> run = train(model, tok, "alpaca.jsonl", steps=200, lr=2e-4, eval=0.1)   # doctest: +SKIP
        >>> print(run)                                                              # doctest: +SKIP
    """
    with captured(Capture(), progress=False) as log:
        return _train(model, tokenizer, data, log, dict(
            steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
            packing=packing, group_by_length=group_by_length, scheduler=scheduler, warmup=warmup, eval_steps=eval_steps, logging_steps=logging_steps,
            seed=seed, resume=resume, gradient_checkpointing=gradient_checkpointing, sft=dict(sft_overrides)), eval=eval, format=format, split=split,
            output_dir=output_dir, overwrite=overwrite, callbacks=callbacks, report_to=report_to, recipe=recipe,
            progress=progress, background=background)


def _train(model: Any, tokenizer: Any, data: Any, log: Capture, settings: dict, *, eval: Any, format: Optional[str],
           split: str, output_dir: Optional[str], overwrite: bool, callbacks: Sequence[Any], report_to: Any,
           recipe: Optional[Recipe], progress: Optional[bool], background: bool) -> Run:
    from trl import SFTTrainer

    from .callbacks import Recorder, RunCallback
    from .data import prepare
    from .portable import pin_4bit_layout

    steps, resume, seed = settings["steps"], settings["resume"], settings["seed"]
    section = build_section(TrainSection, settings, "train")
    build_section(DataSection, dict(format=format, split=split), "data")
    if not hasattr(model, "peft_config"):
        raise ConfigError("model", type(model).__name__, problem="has no adapter to train: call lora_nb.inject(model, ...) first")
    busy = training_run(model)
    if busy is not None:
        raise ConfigError("model", problem=f"is already training in run {busy.name}: stop it (run.stop(), %lora stop) "
                          "or wait for it (run.wait(), %lora wait) first")
    check_sft_overrides(section.sft)
    folder = new_run_dir(output_dir, overwrite=overwrite, resume=resume,
                         label=run_label(lora_section(model), section.lr, model_section(model).quant))
    pin_4bit_layout(model)  # a repack done by an earlier inference would train garbage (see there)
    checkpointing = choose_checkpointing(model, section.gradient_checkpointing, batch_size=section.batch_size,
                                         max_length=section.max_length)
    train_rows, eval_rows, fmt = prepare(data, tokenizer, format=format, split=split, eval=eval, seed=seed)

    try:  # built before anything is written: SFTConfig's own checks (a choice, a combination) come first
        config = sft_config({**device_kwargs(model), "activation_checkpointing": checkpointing,
                             "assistant_only_loss": "messages" in train_rows.column_names,
                             **sft_config_kwargs(section, str(folder / "checkpoints"), eval_rows is not None,
                                                 len(train_rows), report_to)})
    except (TypeError, ValueError) as e:
        raise ConfigError("train.sft", problem=f"SFTConfig refuses these settings: {str(e).strip().splitlines()[0]}") from None
    run = Run(folder)
    run.checkpointing = checkpointing
    before = set(folder.iterdir()) if folder.is_dir() else None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _clear_for(run, resume=resume, overwrite=overwrite)
        if not resume:
            run.mark_preparing()
        log.to(run.dir / "log.txt")
        run.recipe = recipe or Recipe(model=model_section(model), lora=lora_section(model),
                                      data=DataSection(path=_data_path(data, run), format=fmt, split=split,
                                                       eval=_eval_setting(eval, run)),
                                      train=section, output_dir=str(run.dir))
        use_cache = getattr(model.config, "use_cache", None)
        trainer = SFTTrainer(model=model, args=config, train_dataset=train_rows, eval_dataset=eval_rows,
                             processing_class=tokenizer, callbacks=[Recorder(run, model, tokenizer), *callbacks])
        # Trainer writes args.use_cache (False) into the model's config, where it would outlive the run: generating
        # afterwards, and a merged model's config.json, would go without a KV cache. TRL passes use_cache=False to
        # each training forward itself.
        if use_cache is not None:
            model.config.use_cache = use_cache
        if len(trainer.train_dataset) == 0:
            raise ConfigError("train.max_length", section.max_length, problem="leaves no example with a token to "
                              "learn from (every response was cut off); raise max_length")
    except BaseException:  # a failure or Ctrl-C before training: nothing this call wrote is left behind
        log.to(None)
        _remove_new(folder, before)
        raise
    if not resume:
        atomic_write(run.dir / "recipe.yaml", run.recipe.to_yaml())
    warn_once(_lints(model, section, trainer, len(train_rows), eval_rows is not None))
    if progress is None:  # a live view shows progress itself; otherwise one bar
        progress = not any(getattr(c, "shows_progress", False) for c in callbacks)
    _tune_progress(trainer, progress)
    for callback in callbacks:
        if isinstance(callback, RunCallback):
            callback.run = run
            callback.on_ready()
    checkpoint = last_checkpoint(run.dir) if resume else None
    training(model, run)
    if background:
        def target() -> None:
            with log.joined():
                _execute(run, trainer, model, tokenizer, checkpoint, log)
        run.start(target)
        return run
    _execute(run, trainer, model, tokenizer, checkpoint, log)
    if run.error is not None:
        raise run.error
    return run


def _lints(model: Any, section: TrainSection, trainer: Any, rows: int, has_eval: bool) -> list[str]:
    """The run's likely mistakes (:mod:`lora_nb.lints`), read off the model and TRL's prepared data."""
    cut = 0
    if not section.packing:  # TRL truncated to max_length and dropped the rows left with nothing to learn
        sample = trainer.train_dataset.select(range(min(len(trainer.train_dataset), 2000)))
        at_limit = sum(len(ids) >= section.max_length for ids in sample["input_ids"])
        cut = rows - len(trainer.train_dataset) + round(at_limit * len(trainer.train_dataset) / max(1, len(sample)))
    return lints(lora=lora_section(model), lr=section.lr, has_eval=has_eval, adapted=adapted_shapes(model),
                 max_length=section.max_length, cut=cut, rows=rows, warmup=section.warmup, steps=total_steps(section, rows))


def _remove_new(folder: Path, before: Optional[set]) -> None:
    """Remove ``folder`` if it did not exist (``before`` is None), else what was added since ``before``."""
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in set(folder.iterdir()) - before if folder.is_dir() else ():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# What train() writes into a run folder before the first step.
BEFORE_TRAINING = {PREPARING, "log.txt", "metrics.jsonl", "train.jsonl", "eval.jsonl", "recipe.yaml", "checkpoints"}


def never_trained(folder: Union[str, Path]) -> bool:
    """Whether ``folder`` was left by a :func:`train` call that ended (a kill, a crash) before its
    first step: it still carries the mark that call made, its process is gone, and it holds only
    what train() writes before training. A new run may take it, as if it were empty.

    Example:
        >>> never_trained("runs/20261128-101500")   # doctest: +SKIP
        False
    """
    folder = Path(folder)
    try:
        mark = json.loads((folder / PREPARING).read_text())
    except (OSError, ValueError):
        return False
    names = {p.name for p in folder.iterdir()}
    return (names <= BEFORE_TRAINING and not process_alive(mark) and not any((folder / "checkpoints").glob("*"))
            and (not (folder / "metrics.jsonl").exists() or (folder / "metrics.jsonl").stat().st_size == 0))


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
        _remove_new(run.dir, set())
    elif overwrite:
        shutil.rmtree(run.dir / "checkpoints", ignore_errors=True)
        metrics.unlink(missing_ok=True)


def _execute(run: Run, trainer: Any, model: Any, tokenizer: Any, checkpoint: Optional[str], log: Capture) -> None:
    """Train, then save adapter, state, status and chart whatever happened (finished, stopped,
    interrupted, diverged or failed). A failure while saving still leaves run.json and calls on_done."""
    run.trainer = trainer
    try:
        with _stop_on_interrupt(run):
            trainer.train(resume_from_checkpoint=checkpoint)
        run.status = "stopped" if trainer.state.global_step < trainer.state.max_steps else "finished"
        if run.interrupted:
            run.status = "interrupted"
        if run.divergence:
            run.status, run.message = "diverged", run.divergence
    except KeyboardInterrupt:
        run.status = "interrupted"
    except BaseException as e:  # kept on the run; train() re-raises it, a background run's wait() too
        run.status, run.error, run.message = "failed", e, f"{type(e).__name__}: {e}"
    finally:
        run.step = trainer.state.global_step
        _finish(run, trainer, model, tokenizer)
        training(model, None)
        run.trainer = None
    _report(run, log)
    run.done()


def _finish(run: Run, trainer: Any, model: Any, tokenizer: Any) -> None:
    """The final save, each part on its own: a full disk or a second Ctrl-C in one part does not
    skip the others, and run.json always says what happened."""
    import torch

    def adapter() -> None:
        if all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad):
            run.save_adapter(model, tokenizer)
            run.saved_step = run.step
        else:  # keep the last saved (finite) adapter rather than write a broken one over it
            run.message += f" The weights are not finite; the adapter from step {run.saved_step} is kept."

    for part in (adapter, trainer.save_state, lambda: run.save_chart() if run.history else None,
                 lambda: prune_checkpoints(run.dir)):
        try:
            with _defer_interrupt():
                part()
        except BaseException as e:  # noqa: BLE001 - recorded, and the status below still gets written
            run.status = "failed"
            run.error = run.error or e
            run.message = (run.message + " " if run.message else "") + f"final save failed: {type(e).__name__}: {e}"
    try:
        run.write_status()
    except BaseException as e:  # noqa: BLE001
        run.status, run.error = "failed", run.error or e


def prune_checkpoints(run_dir: Union[str, Path]) -> None:
    """Once a run has ended, keep only what resuming it needs: its last complete checkpoint (the
    others go), whose adapter file becomes a hard link to the run's adapter when the two are the
    same bytes. A finished run then holds the adapter once plus its optimizer state, not the
    adapter five times (two checkpoints, each with its optimizer state, and the adapter).

    Example:
        >>> prune_checkpoints("runs/20261128-101500")   # doctest: +SKIP
    """
    import filecmp

    folder = Path(run_dir)
    last = last_checkpoint(folder)
    if last is None:
        return
    for old in (folder / "checkpoints").glob("checkpoint-*"):
        if old.is_dir() and old != Path(last):
            shutil.rmtree(old, ignore_errors=True)
    ours, theirs = folder / "adapter" / "adapter_model.safetensors", Path(last) / "adapter_model.safetensors"
    if ours.is_file() and theirs.is_file() and not ours.samefile(theirs) and filecmp.cmp(ours, theirs, shallow=False):
        link = theirs.with_name(theirs.name + ".link")
        try:
            os.link(ours, link)
            os.replace(link, theirs)
        except OSError:  # a file system without hard links keeps both copies
            link.unlink(missing_ok=True)


@contextmanager
def _defer_interrupt():
    """While the final save runs, a Ctrl-C only says to wait: tearing the save would lose the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *a: print("saving the adapter and history — a moment…", flush=True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


@contextmanager
def _stop_on_interrupt(run: Run):
    """Turn Ctrl-C / a kernel interrupt (SIGINT) into a stop at the end of the current step.

    A KeyboardInterrupt raised at an arbitrary point can be swallowed (inside a ``__del__`` or a
    library's cleanup) or leave a step half done; a flag checked between steps cannot. A second
    interrupt stops at once. Only the main thread can take signals: background runs use stop().
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if run.interrupted:
            raise KeyboardInterrupt
        run.interrupted = True
        run.stop()
        print(f"\nstopping after step {run.step + 1}… (interrupt again to stop at once)", flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


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


def _report(run: Run, log: Capture) -> None:
    """One line saying how the run ended, where its adapter is, and how much library noise it hid."""
    hidden = f" ({log.summary()})" if log.count else ""
    where = f"adapter saved in {run.adapter_dir}{hidden}"
    kept = (f"adapter from step {run.saved_step} kept in {run.adapter_dir}" if run.saved_step else "no adapter was saved") + hidden
    if run.status in ("stopped", "interrupted"):
        how = " (interrupted)" if run.status == "interrupted" else ""
        print(f"stopped at step {run.step}{how}, {where}")
    elif run.status == "diverged":
        print(f"diverged at step {run.step}: {run.message} Stopped before that step changed the weights; "
              f"the last finite adapter is in {run.adapter_dir}{hidden}" if run.saved_step else
              f"diverged at step {run.step}: {run.message} Stopped; {kept}")
    elif run.status == "failed":
        print(f"failed at step {run.step}: {run.message.rstrip('.')}; {kept}")
    else:
        loss = run.last("loss")
        print(f"finished {run.step} steps, final loss {loss:.4f}, {where}" if loss is not None else f"finished, {where}")


def _data_path(data: Any, run: Run) -> str:
    """Where the recipe can find ``data`` again: its path, or a copy written into the run folder."""
    if isinstance(data, (str, os.PathLike)):
        return expand_user(data)  # the recipe (and an exported script) holds the real path
    from .data import read

    path = run.dir / "train.jsonl"
    read(data).to_json(str(path))
    return str(path)


def _eval_setting(eval: Any, run: Run) -> Union[float, str, None]:
    if eval is None or isinstance(eval, float):
        return eval
    if isinstance(eval, (str, os.PathLike)):
        return expand_user(eval)
    from .data import read

    path = run.dir / "eval.jsonl"
    read(eval).to_json(str(path))
    return str(path)


