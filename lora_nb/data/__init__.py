"""The data step: read a file, folder, Hub name or in-memory rows, check it, and prepare TRL's datasets.

``lora_nb.data.check`` (:mod:`lora_nb.data.doctor`) shows which tokens of a few examples carry loss.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["check"]


def __getattr__(name: str) -> Any:
    if name == "check":  # resolved lazily, as lora_nb's names are: importing the package stays instant
        return importlib.import_module(f"{__name__}.doctor").check
    raise AttributeError(f"module 'lora_nb.data' has no attribute {name!r}")
