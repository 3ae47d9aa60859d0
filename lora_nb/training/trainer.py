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
import signal
import threading
from contextlib import contextmanager
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
from ..runs.provenance import lora_section, model_section
from ..core.quiet import Capture, captured
from ..recipe.arguments import known_names
from ..recipe.schema import DataSection, Recipe, TrainSection, build_section
from ..runs.folders import never_trained, new_run_dir, prune_checkpoints, remove_new
from ..runs.busy import check_not_training, training
from ..runs.history import read_jsonl
from ..runs.labels import run_label
from ..runs.record import Run
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
    gradient_checkpointing: Optional[bool] = TrainSection.gradient_checkpointing,
    format: Optional[str] = DataSection.format,
    split: str = DataSection.split,
    train_on: Optional[str] = DataSection.train_on,
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
    prompt/completion format (detected, or named with ``format``); ``train_on`` says which tokens carry
    loss (last_turn, assistant, all: data.train_on; :func:`lora_nb.data.check` shows them). ``eval``: a fraction of the
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
            sft=dict(sft_overrides)), eval=eval, format=format, split=split, train_on=train_on,
            output_dir=output_dir, overwrite=overwrite, callbacks=callbacks, report_to=report_to, recipe=recipe,
            progress=progress, background=background)


def _train(model: Any, tokenizer: Any, data: Any, log: Capture, settings: dict, *, eval: Any, format: Optional[str],
           split: str, train_on: Optional[str], output_dir: Optional[str], overwrite: bool, callbacks: Sequence[Any],
           report_to: Any, recipe: Optional[Recipe], progress: Optional[bool], background: bool) -> Run:
    from .callbacks import Recorder, RunCallback
    from .prepared import build_trainer
    from ..data.prepare import kept_tokens, prepare
    from ..hf.formats import loss_flags
    from ..hf.models import pin_4bit_layout

    resume, seed = settings["resume"], settings["seed"]
    section = build_section(TrainSection, settings, "train")
    build_section(DataSection, dict(format=format, split=split, train_on=train_on), "data")
    if not hasattr(model, "peft_config"):
        raise ConfigError("model", type(model).__name__,
                          problem="has no adapter to train: call lora_nb.inject(model, ...) first")
    check_not_training(model)
    check_sft_overrides(section.sft)
    folder = new_run_dir(output_dir, overwrite=overwrite, resume=resume,
                         label=run_label(lora_section(model), section.lr, model_section(model).quant))
    pin_4bit_layout(model)  # a repack done by an earlier inference would train garbage (see there)
    checkpointing = choose_checkpointing(model, section.gradient_checkpointing, batch_size=section.batch_size,
                                         max_length=section.max_length)
    train_rows, eval_rows, fmt = prepare(data, tokenizer, format=format, split=split, eval=eval, train_on=train_on,
                                         seed=seed, max_length=kept_tokens(section))  # a 10 MB row: cut, then tokenised

    try:  # built before anything is written: SFTConfig's own checks (a choice, a combination) come first
        config = sft_config({**device_kwargs(model), "activation_checkpointing": checkpointing,
                             **loss_flags(train_rows.column_names, train_on),
                             **sft_config_kwargs(section, str(folder / "checkpoints"), eval_rows is not None,
                                                 len(train_rows), report_to)})
    except (TypeError, ValueError) as e:
        raise ConfigError("train.sft",
                          problem=f"SFTConfig refuses these settings: {str(e).strip().splitlines()[0]}") from None
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
                                                       train_on=train_on, eval=_eval_setting(eval, run)),
                                      train=section, output_dir=str(run.dir))
        use_cache = getattr(model.config, "use_cache", None)
        recorder = Recorder(run, model, tokenizer, paced=paced_saves(section.sft))
        with interruptible():  # TRL tokenises with Dataset.map, whose fingerprinting can swallow a Ctrl-C
            trainer, run.reused_rows = build_trainer(model, config, train_rows, eval_rows, tokenizer,
                                                     [recorder, *callbacks])
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
        e = _one_line(e, run)
        run.status, run.error, run.message = "failed", e, (str(e) if isinstance(e, ConfigError)
                                                           else f"{type(e).__name__}: {e}")
    finally:
        run.step = trainer.state.global_step
        try:
            with _defer_interrupt():  # a Ctrl-C from here on waits for the save instead of tearing it
                _finish(run, trainer, model, tokenizer)
        finally:
            training(model, None)
            run.trainer = None
    _report(run, log)
    run.done()


def _one_line(error: BaseException, run: Run) -> BaseException:
    """A file-system error while training or saving (a full disk, a read-only folder) as one line
    saying what is kept; any other error as it is."""
    kept = (f"the checkpoint of step {run.saved_step} is kept: make room, then resume=\"{run.dir}\""
            if run.saved_step else "no checkpoint was complete yet")
    return write_error(error, getattr(error, "filename", None) or run.dir, "output_dir", left=kept) or error


def _finish(run: Run, trainer: Any, model: Any, tokenizer: Any) -> None:
    """The final save, each part on its own: a full disk in one part does not skip the others, and
    run.json always says what happened. (Ctrl-C waits: the caller defers it.)"""
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
            part()
        except BaseException as e:  # noqa: BLE001 - recorded, and the status below still gets written
            e = _one_line(e, run)
            run.status = "failed"
            run.error = run.error or e
            run.message = (run.message + " " if run.message else "") + (
                f"final save failed: {e}" if isinstance(e, ConfigError)
                else f"final save failed: {type(e).__name__}: {e}")
    try:
        run.write_status()
    except BaseException as e:  # noqa: BLE001
        run.status, run.error = "failed", run.error or e


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
    kept = (f"adapter from step {run.saved_step} kept in {run.adapter_dir}" if run.saved_step
            else "no adapter was saved") + hidden
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
        print(f"finished {run.step} steps, final loss {loss:.4f}, {where}" if loss is not None
              else f"finished, {where}")


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
