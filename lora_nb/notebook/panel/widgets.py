"""What the panel's tabs share: its buttons and tabs by name, the colours, the tables' CSS, the Copy
button's script, and the tooltip a control takes from the recipe's help text."""

from __future__ import annotations

import dataclasses

import ipywidgets as w

from ...hf.compat import tooltip_keyword

BUTTONS = ("Load", "Preview", "Train", "Sweep", "Stop", "Save now", "Generate", "Compare", "Export code",
           "Save to file", "Push to Hub", "Resume", "Load adapter")
TABS = ("Model", "Adapter", "Data", "Train", "Runs", "Export")
RANKS = (1, 2, 4, 8, 16, 32, 64, 128)
WARN = "#9a5b00"  # amber: readable on white, distinct from errors' red
ERROR = "#b00"

# Tables as JupyterLab draws notebook outputs (its CSS variables, with fallbacks for other front
# ends); inside a widget they would otherwise get the browser's 1 px padding and the widget's
# 28 px line height, which tears a multi-line cell (a prompt with a newline) apart.
CSS = """<style>
.lora-nb-panel table.lora-nb {border-collapse: collapse; border-spacing: 0; border: none; margin: 0.4em 0;
  font-size: 12px; line-height: 1.4; color: var(--jp-content-font-color1, #222)}
.lora-nb-panel table.lora-nb caption {padding: 0.3em 0; text-align: left}
.lora-nb-panel table.lora-nb th, .lora-nb-panel table.lora-nb td {padding: 0.35em 0.7em; text-align: right;
  vertical-align: top; border: none; line-height: 1.4}
.lora-nb-panel table.lora-nb th {font-weight: bold}
.lora-nb-panel table.lora-nb thead {border-bottom: 1px solid var(--jp-border-color1, #bdbdbd)}
.lora-nb-panel table.lora-nb tbody tr:nth-child(even) {background: var(--jp-rendermime-table-row-background, #f5f5f5)}
.lora-nb-panel table.lora-nb tbody tr:hover {background: var(--jp-rendermime-table-row-hover-background, #e3f2fd)}
.lora-nb-panel .lora-nb-scroll {overflow: auto; max-height: 14em}
.lora-nb-panel textarea.lora-nb-code {width: 100%; box-sizing: border-box;
  font: 12px/1.4 var(--jp-code-font-family, monospace)}
</style>"""

# The Copy button's click: the clipboard API where the page is a secure context (https, localhost),
# else the older copy command on the selected text; it says which happened.
COPY_JS = ("const box = this.parentElement.querySelector('textarea'), said = this.nextElementSibling;"
           "box.focus(); box.select();"
           "const done = ok => { said.textContent = ok ? ' copied' : ' selected: press Ctrl+C (⌘C)'; };"
           "if (navigator.clipboard && window.isSecureContext) {"
           "navigator.clipboard.writeText(box.value).then(() => done(true), () => done(document.execCommand('copy')));"
           "} else { done(document.execCommand('copy')); }")

TOOLTIP = tooltip_keyword(w.__version__)  # the tooltip's keyword in the installed ipywidgets


def field_tooltip(section: type, name: str) -> dict:
    """A control's tooltip keyword: the setting's help text from the recipe, where it is defined once.

    Example:
        >>> from lora_nb.recipe.schema import LoraSection
        >>> getattr(w.IntText(**field_tooltip(LoraSection, "r")), TOOLTIP)[:14]
        'Rank of the up'
    """
    return {TOOLTIP: next(f.metadata["help"] for f in dataclasses.fields(section) if f.name == name)}


def wide() -> w.Layout:
    """A text control's layout: 60% of the panel's width.

    Example:
        >>> wide().width
        '60%'
    """
    return w.Layout(width="60%")


def fitted() -> w.Layout:
    """A button's or checkbox's layout: as wide as its label, never squeezed by its row.

    Example:
        >>> fitted().flex
        '0 0 auto'
    """
    return w.Layout(width="auto", flex="0 0 auto")
