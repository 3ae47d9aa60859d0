"""Executing a built trainer into its :class:`~lora_nb.runs.record.Run`: train, then save the adapter,
state, status and chart whatever happened (finished, stopped, interrupted, diverged or failed), and say
in one line how it ended. Ctrl-C / the kernel's interrupt stops at the end of the current step; during
the final save it only says to wait.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Optional

from .stopping import record_stop, stop_line
from ..core.errors import ConfigError
from ..core.files import write_error
from ..core.quiet import Capture
from ..hf.compat import labelled_positions_only
from ..runs.busy import training
from ..runs.folders import prune_checkpoints
from ..runs.record import Run


def execute(run: Run, trainer: Any, model: Any, tokenizer: Any, checkpoint: Optional[str], log: Capture,
            mirror: Any = None) -> None:
    """Train, then save adapter, state, status and chart whatever happened (finished, stopped,
    interrupted, diverged or failed). A failure while saving still leaves run.json and calls on_done.
    ``mirror`` (a :class:`lora_nb.hf.mirror.Mirror`): the run folder's copy is complete when this returns."""
    run.trainer = trainer
    try:
        with _stop_on_interrupt(run), labelled_positions_only():
            trainer.train(resume_from_checkpoint=checkpoint)
        run.status = "stopped" if trainer.state.global_step < trainer.state.max_steps else "finished"
        record_stop(run, trainer)  # train.early_stopping: the best eval, and finished where it stopped the run
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
                _finish(run, trainer, model, tokenizer, mirror)
        finally:
            training(model, None)
            run.trainer = None
    _report(run, log)
    if mirror is not None:  # the log's last lines too, before train() returns
        mirror.file("log.txt")
        mirror.close()
    run.done()


def _one_line(error: BaseException, run: Run) -> BaseException:
    """A file-system error while training or saving (a full disk, a read-only folder) as one line
    saying what is kept; any other error as it is."""
    kept = (f"the checkpoint of step {run.saved_step} is kept: make room, then resume=\"{run.dir}\""
            if run.saved_step else "no checkpoint was complete yet")
    return write_error(error, getattr(error, "filename", None) or run.dir, "output_dir", left=kept) or error


def _finish(run: Run, trainer: Any, model: Any, tokenizer: Any, mirror: Any = None) -> None:
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
        if mirror is not None:  # everything else first; then run.json, saying whether the mirror kept up
            mirror.sync()
            run.mirror_behind = mirror.behind
        run.write_status()
        if mirror is not None:
            mirror.file("run.json")
            mirror.wait()
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
        print(stop_line(run, where) if run.stopped_early else f"finished {run.step} steps, final loss {loss:.4f}, "
              f"{where}" if loss is not None else f"finished, {where}")
