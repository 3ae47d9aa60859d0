"""A run folder's copy in a mirror (a mounted Drive, a network disk), kept as it is written.

``MIRROR/<name>`` has the run folder's layout. Every file appears whole or not at all (copied to a
temporary sibling, fsynced, renamed), and a checkpoint appears only complete (copied as
``checkpoints/.checkpoint-N.partial``, then renamed to ``checkpoint-N``), so a copy torn by a
disconnect or a kill is never taken for complete (:func:`lora_nb.hf.folders.last_checkpoint`
reads only ``checkpoint-N``). The copying runs in one background thread, in the order asked, so a
step waits for no disk; :meth:`Mirror.sync` copies the rest and waits. A failing copy (Drive
unmounted) is said once and kept in :attr:`Mirror.behind`; training goes on.

Shared with exported scripts: standard library only.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import sys
import threading
from pathlib import Path

CHECKPOINT = r"checkpoint-\d+"  # a literal, as every constant a script carries


def check_mirror(root: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> Path:
    """The folder ``root/<run name>`` a run is mirrored to, after checking ``root`` can be written
    (it is made if missing). Raises OSError (a file, a read-only folder) or ValueError (the mirror is
    the run folder itself).

    Example:
        >>> check_mirror("/tmp/lora_nb-doctest-mirror", "runs/r1").name
        'r1'
    """
    import errno
    import tempfile

    folder = Path(os.path.expandvars(os.path.expanduser(os.fspath(root)))).absolute()
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(run_dir).name
    if target.resolve() == Path(run_dir).resolve():
        raise ValueError("is the run's own output parent: the copy would be the run folder itself")
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".lora_nb-probe"):
        pass
    return target


class Mirror:
    """Copies of the run folder ``source`` kept in ``target`` by a background thread.

    Example:
        >>> mirror = Mirror("runs/r1", "/content/drive/MyDrive/lora_runs/r1")  # doctest: +SKIP
        >>> mirror.file("run.json"); mirror.checkpoint("checkpoint-10"); mirror.sync()  # doctest: +SKIP
    """

    def __init__(self: Mirror, source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        self.source, self.target = Path(source), Path(target)
        self.behind = ""  # why the mirror is behind the run folder, once a copy failed
        self.tasks: queue.Queue = queue.Queue()
        self.pending: set[str] = set()  # files already waiting to be copied: a second ask adds nothing
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._work, name="lora_nb-mirror", daemon=True)
        self.thread.start()

    def file(self: Mirror, name: str) -> None:
        """Copy ``source/name`` (a file) whole, soon; asked again before it is copied, it is copied once."""
        with self.lock:
            if name in self.pending:
                return
            self.pending.add(name)
        self.tasks.put((name, lambda: self._copy_file(name)))

    def checkpoint(self: Mirror, name: str) -> None:
        """Copy ``checkpoints/name`` complete, then drop the mirror's checkpoints the run folder no longer has."""
        self.tasks.put((None, lambda: (self._copy_checkpoint(name), self._prune())))

    def sync(self: Mirror) -> None:
        """Copy everything not yet copied (files, the adapter and other folders, checkpoints), prune
        old checkpoints, copy ``run.json`` last, and wait until done."""
        self.tasks.put((None, self._copy_all))
        self.tasks.join()

    def wait(self: Mirror) -> None:
        """Wait until every copy asked so far is done."""
        self.tasks.join()

    def close(self: Mirror) -> None:
        """Copy what is asked so far, then end the copying thread (a later ask is not copied)."""
        self.tasks.put((None, None))
        self.thread.join()

    def _work(self: Mirror) -> None:
        while True:
            name, task = self.tasks.get()
            if task is None:
                self.tasks.task_done()
                return
            if name is not None:
                with self.lock:
                    self.pending.discard(name)
            try:
                task()
            except OSError as e:
                self._failed(e)
            finally:
                self.tasks.task_done()

    def _failed(self: Mirror, error: OSError) -> None:
        first = not self.behind
        self.behind = f"a copy to {self.target} failed ({type(error).__name__}: {error.strerror or error})"
        if first:  # one line: training goes on, run.json says the mirror is behind
            print(f"mirror: {self.behind}; training goes on, the mirror is behind", file=sys.stderr, flush=True)

    def _copy_file(self: Mirror, name: str) -> None:
        source = self.source / name
        if source.is_file():
            copy_whole(source, self.target / name)

    def _copy_checkpoint(self: Mirror, name: str) -> None:
        source, done = self.source / "checkpoints" / name, self.target / "checkpoints" / name
        if done.is_dir() or not source.is_dir():
            return
        try:
            _copy_folder(source, done)
        except OSError:
            if source.is_dir():
                raise
            # the run folder pruned it while it was copied (a slow mirror): a newer one is on its way
            shutil.rmtree(done.with_name(f".{name}.partial"), ignore_errors=True)

    def _prune(self: Mirror) -> None:
        """The mirror's checkpoints the run folder pruned go too, once a newer one is complete in the mirror."""
        here, there = self.source / "checkpoints", self.target / "checkpoints"
        if not there.is_dir():
            return
        kept = {p.name for p in here.iterdir()} if here.is_dir() else set()
        complete = [p for p in there.iterdir() if re.fullmatch(CHECKPOINT, p.name) and p.name in kept]
        if not complete:  # never leave the mirror without a complete checkpoint
            return
        for old in there.iterdir():
            if old.name not in kept and (re.fullmatch(CHECKPOINT, old.name) or old.name.endswith(".partial")):
                shutil.rmtree(old, ignore_errors=True)

    def _copy_all(self: Mirror) -> None:
        self.target.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.source.iterdir()):
            if path.name == "run.json" or path.name.startswith("."):
                continue
            if path.name == "checkpoints" and path.is_dir():
                for checkpoint in sorted(path.iterdir()):
                    if re.fullmatch(CHECKPOINT, checkpoint.name):
                        self._copy_checkpoint(checkpoint.name)
                    elif checkpoint.is_file() and not checkpoint.name.startswith("."):  # Trainer's README.md
                        copy_whole(checkpoint, self.target / "checkpoints" / checkpoint.name)
                self._prune()
            elif path.is_dir():
                _copy_folder(path, self.target / path.name, replace=True)
            elif path.is_file():
                copy_whole(path, self.target / path.name)
        self._copy_file("run.json")
        self.behind = ""  # everything is in the mirror now


def copy_whole(source: Path, target: Path) -> None:
    """Copy the file ``source`` to ``target`` through a temporary sibling, fsynced, then renamed:
    ``target`` is the old file or the new one, never half of one.

    Example:
        >>> copy_whole(Path(__file__), Path("/tmp/lora_nb-doctest-mirror.py"))
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(source, "rb") as f, open(tmp, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_folder(source: Path, target: Path, replace: bool = False) -> None:
    """Copy the folder ``source`` as ``.<name>.partial`` beside ``target``, then rename it to
    ``target`` (with ``replace``: swapped for the one there, which stays whole until the swap)."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, partial, copy_function=_fsynced)
    if replace and target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(partial, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, target)


def _fsynced(source: str, target: str) -> str:
    shutil.copy2(source, target)
    with open(target, "rb") as f:
        os.fsync(f.fileno())
    return target

