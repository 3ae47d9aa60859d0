"""Fixtures of the notebook tests."""

from __future__ import annotations

import os
import sys

import pytest


@pytest.fixture
def kernel_env(monkeypatch):
    """Kernels start with this interpreter (the kernelspec says plain "python")."""
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


@pytest.fixture(scope="session")
def together():
    """:func:`execute_together`, for module fixtures (test modules do not import each other)."""
    return execute_together


def execute_together(notebooks: dict, folder_for, timeout: int, at_once: int = 2) -> dict:
    """Execute the notebooks ``{name: path}``, ``at_once`` kernels at a time, one core each
    (OMP_NUM_THREADS=1), each in its own folder ``folder_for(name)``, in the order given (longest
    first, so the slots end together). Returns ``{name: (folder, the executed notebook, or the
    exception that stopped it)}``: each notebook's own test reports its failure.

    On the models these notebooks train (64 wide) a second thread buys nothing, so two kernels
    take about half the time of running them one after another."""
    import asyncio
    import shutil

    import nbformat
    from nbclient import NotebookClient

    async def one(name, path, slots: asyncio.Semaphore):
        async with slots:
            folder = folder_for(name)
            shutil.copy(path, folder)
            nb = nbformat.read(folder / path.name, as_version=4)
            client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": str(folder)}})
            try:
                await client.async_execute()
            except Exception as e:  # noqa: BLE001 - reported by that notebook's test
                return name, (folder, e)
            return name, (folder, nb)

    async def every():
        slots = asyncio.Semaphore(at_once)
        return dict(await asyncio.gather(*(one(name, path, slots) for name, path in notebooks.items())))

    with pytest.MonkeyPatch.context() as env:
        env.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])  # kernels run this python
        env.setenv("OMP_NUM_THREADS", "1")
        return asyncio.run(every())
