"""Warnings, by thread: those raised in a panel's action (while it runs) and in its training thread
(once it draws into the panel) show in that panel.

warnings.catch_warnings swaps module-wide state (it is not thread-safe), and a background
thread's stderr lands in JupyterLab's log console. So the panel hooks warnings.showwarning and
keys on the thread: a panel's action and its training thread hand their warnings to that panel
(:data:`OWNERS`). When another hook comes next (lora_nb.core.quiet's, which keeps library noise in
the run's log.txt), it gets the panel as the file to write what it does not keep; when Python's
own comes next, the panel shows the warning itself. Every other thread's warnings go on as before.
"""

from __future__ import annotations

import sys
import threading
import warnings
import weakref
from typing import Any, Optional, TextIO

# thread -> its Panel (not imported: the panel imports this module)
OWNERS: weakref.WeakKeyDictionary[threading.Thread, Any] = weakref.WeakKeyDictionary()
_next_hook: Any = None
_inside = threading.local()


class _PanelFile:
    """Where the next hook writes a warning: the panel, as one line."""

    def __init__(self, panel: Any, category: type, message: Any) -> None:
        self.panel, self.category, self.message = panel, category, message

    def write(self, _text: str) -> None:
        self.panel.warn(self.category, self.message)


def show_warning(message: Any, category: type, filename: str, lineno: int, file: Optional[TextIO] = None,
                 line: Optional[str] = None) -> None:
    """``warnings.showwarning`` while a panel is open: a warning of a thread in :data:`OWNERS` goes to
    its panel (through the next hook, if there is one), any other on to the next hook.

    Example:
        >>> from lora_nb.notebook.panel import Panel
        >>> panel = Panel(); warnings.showwarning is show_warning  # doctest: +SKIP
        True
    """
    panel = OWNERS.get(threading.current_thread()) if file is None else None
    inside = getattr(_inside, "hook", False)  # a hook installed after this one handed the warning back
    if panel is not None and (inside or _next_hook is warnings._showwarning_orig):
        panel.warn(category, message)
    elif inside:
        (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))
    else:
        _inside.hook = True
        try:
            _next_hook(message, category, filename, lineno,
                       _PanelFile(panel, category, message) if panel is not None else file, line)
        finally:
            _inside.hook = False


def route_warnings() -> None:
    """Put :func:`show_warning` first in line (again, if a catch_warnings block or another hook replaced it).

    Example:
        >>> route_warnings(); warnings.showwarning is show_warning
        True
    """
    global _next_hook
    if warnings.showwarning is not show_warning:
        _next_hook, warnings.showwarning = warnings.showwarning, show_warning
