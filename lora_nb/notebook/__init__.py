"""The notebook layer: ``%lora`` magics, the live training view and the widget panel.

It renders what the Python API produces and calls nothing else; the API never imports it.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext lora_nb``: register ``%lora`` / ``%%lora``, and say in one line when an installed
    library is outside the tested matrix (``%lora doctor`` has the rest). Imports no torch (that
    waits for first use)."""
    from ..core.doctor import outside
    from .magics import LoraMagics

    ipython.register_magics(LoraMagics)
    found = outside()
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        print(f"lora_nb: {found[0]}{more}. %lora doctor for details.")


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext lora_nb``: remove ``%lora`` / ``%%lora``."""
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("lora", None)
    ipython.magics_manager.registry.pop("LoraMagics", None)
