"""Fixtures of the notebook tests."""

from __future__ import annotations

import os
import sys

import pytest


@pytest.fixture
def kernel_env(monkeypatch):
    """Kernels start with this interpreter (the kernelspec says plain "python")."""
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
