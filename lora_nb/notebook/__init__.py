"""The notebook layer: ``%lora`` magics, the live training view and the widget panel.

It renders what the Python API produces and calls nothing else; the API never imports it.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext lora_nb``: register ``%lora`` / ``%%lora``. Imports no torch (that waits for first use)."""
    from .magics import LoraMagics

    ipython.register_magics(LoraMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext lora_nb``: remove ``%lora`` / ``%%lora``."""
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("lora", None)
    ipython.magics_manager.registry.pop("LoraMagics", None)
