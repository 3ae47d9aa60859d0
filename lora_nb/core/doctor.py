"""What this machine and its libraries are, against what lora_nb is tested on: ``lora-nb doctor``,
``%lora doctor`` and the one line ``%load_ext lora_nb`` prints when something is outside the
tested matrix (:data:`lora_nb.hf.compat.TESTED`).

Versions are read from the installed packages' metadata (no import), so the check at ``%load_ext``
takes milliseconds; the device rows import torch and are only in the full report.

Example:
    >>> outside({"transformers": "5.10.0", "peft": "0.20.0"})
    ["transformers 5.10.0 is older than lora_nb is tested with (5.15.0–5.25.0): pip install -U 'transformers>=5.15.0'"]
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Optional

from ..hf.compat import TESTED
from .render import html_table, text_table


def installed() -> dict[str, Optional[str]]:
    """Each package of the matrix → its installed version (None when missing); ``python`` too.

    Example:
        >>> installed()["python"] == platform.python_version()
        True
    """
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in TESTED:
        if name != "python":
            try:
                found[name] = version(name)
            except PackageNotFoundError:
                found[name] = None
    return found


def _release(text: str) -> tuple[int, ...]:
    """``"2.11.0+cu128"`` → ``(2, 11, 0)``: the release numbers, local and pre-release tags dropped."""
    numbers = []
    for part in text.split("+")[0].split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        numbers.append(int(digits))
        if not part.isdigit():
            break
    return tuple(numbers)


def verdict(name: str, version: Optional[str]) -> str:
    """``"tested"``, ``"older"``, ``"newer"`` or ``"missing"`` for ``name`` at ``version``.

    Python is compared by minor release (3.13.15 is within 3.10–3.13).

    Example:
        >>> verdict("transformers", "5.15.0"), verdict("torch", "2.11.0+cu128"), verdict("python", "3.13.15")
        ('tested', 'tested', 'tested')
    """
    if version is None:
        return "missing"
    oldest, newest = TESTED[name]
    have = _release(version)[:2] if name == "python" else _release(version)
    if have < _release(oldest):
        return "older"
    if have > _release(newest):
        return "newer"
    return "tested"


def outside(versions: Optional[dict[str, Optional[str]]] = None) -> list[str]:
    """One line per installed package outside the tested matrix, saying what to run; empty when
    everything is inside it.

    Example:
        >>> outside({"peft": "0.20.0"})
        []
    """
    lines = []
    for name, version in (installed() if versions is None else versions).items():
        oldest, newest = TESTED[name]
        said = verdict(name, version)
        span = f"{oldest}–{newest}"
        if said == "missing":
            lines.append(f"{name} is not installed: pip install '{name}>={oldest}'")
        elif said == "older" and name == "python":
            lines.append(f"Python {version} is older than lora_nb supports ({span}): use Python {oldest} or newer")
        elif said == "older":
            lines.append(f"{name} {version} is older than lora_nb is tested with ({span}): "
                         f"pip install -U '{name}>={oldest}'")
        elif said == "newer" and name != "python":
            lines.append(f"{name} {version} is newer than lora_nb is tested with ({span}); "
                         f"if something breaks: pip install '{name}=={newest}'")
        elif said == "newer":
            lines.append(f"Python {version} is newer than lora_nb is tested with ({span})")
    return lines


HEADERS = ["", "here", "tested range / note"]


@dataclass
class Report:
    """The doctor's table: (what, value, note) rows; renders as text and as HTML."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        table = text_table(HEADERS, self.rows, title="lora_nb doctor")
        return table + ("\n" + "\n".join(self.advice) if self.advice else "\nall versions inside the tested matrix")

    def _repr_html_(self) -> str:
        import html

        advice = ("".join(f"<li>{html.escape(line)}</li>" for line in self.advice)
                  or "<li>all versions inside the tested matrix</li>")
        return html_table(HEADERS, self.rows, title="lora_nb doctor") + f"<ul>{advice}</ul>"


def doctor() -> Report:
    """Python and library versions against the tested matrix, the device, the dtype ``auto`` would
    pick, bitsandbytes' 4-bit path, the cache folders and offline mode.

    Example:
        >>> print(doctor())  # doctest: +ELLIPSIS
        lora_nb doctor
        ...
        python   ...tested (3.10–3.13)
        ...
    """
    versions = installed()
    rows = []
    for name, version in versions.items():
        oldest, newest = TESTED[name]
        rows.append((name, version or "—", f"{verdict(name, version)} ({oldest}–{newest})"))
    rows += _device_rows(versions)
    from .files import cache_dir

    hub = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    rows += [("lora_nb cache", str(cache_dir()), "$LORA_NB_CACHE"),
             ("Hugging Face cache", hub, "$HF_HOME"),
             ("offline", "yes" if _offline() else "no", "$HF_HUB_OFFLINE")]
    return Report(rows, outside(versions))


def _device_rows(versions: dict[str, Optional[str]]) -> list[tuple[str, str, str]]:
    if versions.get("torch") is None:
        return []
    import torch

    from ..hf.devices import cpu_bf16_features, resolve_dtype

    dtype = str(resolve_dtype("auto")).replace("torch.", "")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
        four_bit = "CUDA kernels"
    else:
        flags = cpu_bf16_features()
        device = f"CPU, {os.cpu_count()} cores" + (f", {' and '.join(flags)}" if flags
                                                    else ", no bf16 matrix instructions")
        four_bit = ("CPU (AVX512-BF16 repack kept off: pin_4bit_layout)" if "AVX512-BF16" in flags
                    else "CPU, generic kernel")
    rows = [("device", device, ""), ("dtype auto", dtype, "what load(dtype='auto') picks")]
    if versions.get("bitsandbytes") is not None:
        rows.append(("4-bit backend", four_bit, f"bitsandbytes {versions['bitsandbytes']}"))
    return rows


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
