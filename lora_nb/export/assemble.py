"""A script assembled from its template's source text: the settings block filled in, the branches
the settings decide taken, and the helpers of :mod:`lora_nb.hf` the remaining code calls copied in.

A template (``script_main.py``, ``sweep_main.py``) is valid Python: a docstring, imports (those from
:mod:`lora_nb.hf` name the helpers it calls), one settings block between :data:`START` and
:data:`END`, then its code. :func:`assemble` keeps the code as written, except that each ``if``,
``x if test else y`` and ``and``/``or`` operand whose test reads only the settings (``known``) is
replaced by what the settings make of it; then it copies, from the modules of :mod:`lora_nb.hf`,
the definitions the code uses, with what they use in turn, as their source text (comments kept,
docstring examples left out), each after its first user.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .prune import blocks, prune

START = "# --- settings: the recipe's, as lora_nb export wrote them ---"
END = "# --- end of settings ---"

# The modules of lora_nb.hf a script takes helpers from.
HF = ("devices", "memory_model", "models", "formats", "columns", "folders", "compat", "trackers", "stopping",
      "mirror")

# Imports a script never carries: its helpers' code replaces lora_nb's; the future import comes first.
SKIPPED = ("lora_nb", "__future__")


@dataclass
class Template:
    """A template's parts: its docstring's text, its import statements, its setting names and its code."""

    docstring: str
    imports: list[ast.stmt]
    settings: list[str]
    code: str


@dataclass
class Definition:
    """A top-level definition: its source text (with the comment lines just above it), the names it
    uses in order of appearance, and those it needs defined before it (default values, decorators)."""

    name: str
    text: str
    uses: list[str] = field(default_factory=list)
    early: set[str] = field(default_factory=set)


def read_template(source: str) -> Template:
    """The parts of a template's ``source`` (its leading comment lines are left out).

    Example:
        >>> read_template(Path(__file__).with_name("script_main.py").read_text()).settings[0]
        'MODEL'
    """
    lines = source.splitlines(keepends=True)
    start, end = lines.index(START + "\n"), lines.index(END + "\n")
    tree = ast.parse(source)
    head = [node for node in tree.body if node.end_lineno <= start]
    docstring = head[0]
    settings = ast.parse("".join(lines[start + 1:end]))
    names = [target.id for node in settings.body
             for target in ([node.target] if isinstance(node, ast.AnnAssign) else node.targets)]
    return Template("".join(lines[docstring.lineno - 1:docstring.end_lineno]), head[1:], names,
                    "".join(lines[end + 1:]).lstrip("\n"))


def assemble(docstring: str, templates: list[Template], settings: str, known: dict[str, Any]) -> str:
    """The script: ``docstring``, the imports its code uses, the ``settings`` lines between the
    markers, the templates' definitions that its entry point (the first template's ``if __name__ ==
    "__main__":``) reaches, in the templates' order, with the branches ``known`` decides taken, then
    the :mod:`lora_nb.hf` helpers they call, each after its first user, then the entry point.

    Example:
        >>> print(assemble(t.docstring, [t], "MODEL = 'm'\\n", {"MODEL": "m"}))  # doctest: +SKIP
    """
    own, entry = {}, []
    for number, template in enumerate(templates):
        for node, text in _top_level(prune(template.code, known)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                own[node.name] = Definition(node.name, text, _uses(node))
            elif number == 0:
                entry.append(Definition("", text, _uses(node)))
    reached, waiting = set(), [name for d in entry for name in d.uses]
    while waiting:
        name = waiting.pop()
        if name in own and name not in reached:
            reached.add(name)
            waiting += own[name].uses
    helpers, kept = hf_definitions(), {}

    def visit(name: str) -> None:
        if name in own or name in kept or name not in helpers:
            return
        definition = helpers[name]
        for early in sorted(definition.early):
            visit(early)
        kept[name] = definition
        for used in definition.uses:
            visit(used)

    ordered = [d for name, d in own.items() if name in reached]
    for definition in [*ordered, *entry]:
        for name in definition.uses:
            visit(name)
    code = [d.text for d in [*ordered, *kept.values(), *entry]]
    used = set().union(*(_names(text) for text in code))
    nodes = [node for template in templates for node in template.imports] + hf_imports()
    imports, loaded = _imports(nodes, used), {key for key, run in _imported(nodes, used).items() if run}
    code = [*(d.text for d in ordered), *(_without_imports(d.text, loaded) for d in kept.values()),
            *(d.text for d in entry)]
    return f"{docstring}\n{imports}\n{START}\n{settings}{END}\n\n\n" + "\n\n".join(t.strip("\n") + "\n" for t in code)


def hf_definitions() -> dict[str, Definition]:
    """Every top-level function, class and constant of :data:`HF`'s modules, by name.

    Example:
        >>> "load_model" in hf_definitions()
        True
    """
    found = {}
    for module in HF:
        for node, text in _top_level(_hf_source(module)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defaults = [*node.args.defaults, *node.args.kw_defaults] if isinstance(node, ast.FunctionDef) else []
                early = {n for part in [*node.decorator_list, *filter(None, defaults)] for n in _uses(part)}
                found[node.name] = Definition(node.name, _without_examples(text), _uses(node), early)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    found[target.id] = Definition(target.id, text, _uses(node), set(_uses(node)))
    return found


def hf_imports() -> list[ast.stmt]:
    """The module-level import statements of :data:`HF`'s modules (``if TYPE_CHECKING:`` ones too).

    Example:
        >>> any(isinstance(node, ast.If) for node in hf_imports())   # if TYPE_CHECKING:
        True
    """
    return [node for module in HF for node in ast.parse(_hf_source(module)).body
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.If))]


def _hf_source(module: str) -> str:
    return (Path(__file__).parent.parent / "hf" / f"{module}.py").read_text(encoding="utf-8")


def _top_level(code: str) -> list[tuple[ast.stmt, str]]:
    """(statement, its text with the comment lines just above it) for each top-level statement of ``code``."""
    lines = code.splitlines(keepends=True)
    found = []
    for node in ast.parse(code).body:
        start = (node.decorator_list[0] if getattr(node, "decorator_list", None) else node).lineno - 1
        while start > 0 and lines[start - 1].startswith("#"):
            start -= 1
        found.append((node, "".join(lines[start:node.end_lineno])))
    return found


def _uses(node: ast.AST) -> list[str]:
    """The names ``node`` reads, in the order they appear, each once."""
    names = sorted((n.lineno, n.col_offset, n.id) for n in ast.walk(node) if isinstance(n, ast.Name)
                   and isinstance(n.ctx, ast.Load))
    return list(dict.fromkeys(name for _, _, name in names))


def _names(code: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name)}


def _without_examples(text: str) -> str:
    """A definition's text with its docstring cut to its first paragraph: a script says what each helper
    does; the why, the caveats and the doctest examples stay in lora_nb.hf, where the link in the
    script's header points."""
    node = ast.parse(text).body[0]
    docstring = node.body[0] if isinstance(node, ast.FunctionDef) and ast.get_docstring(node) is not None else None
    if docstring is None:
        return text
    lines = text.splitlines(keepends=True)
    first, last = docstring.lineno - 1, docstring.end_lineno - 1
    blank = next((i for i in range(first + 1, last) if not lines[i].strip()), None)
    if blank is None or lines[last].strip() != '"""':
        return text
    lines[blank - 1] = lines[blank - 1].rstrip("\n") + '"""\n'  # the closing quotes end the paragraph kept
    return "".join(lines[:blank] + lines[last + 1:])


def _imports(nodes: list[ast.stmt], used: set[str]) -> str:
    """``from __future__ import annotations`` and the imports of ``nodes`` that bind a name in ``used``, one
    statement per module, standard library first; those that only ``if TYPE_CHECKING:`` blocks hold (names
    for annotations) stay in such a block, so no import the script does not run can fail it. lora_nb's are
    left out."""
    found = _imported(nodes, used)
    annotations = [key for key, run in found.items() if not run]
    text = "from __future__ import annotations\n\n" + _import_sections(
        [key for key, run in found.items() if run] + ([("typing", "TYPE_CHECKING")] if annotations else []))
    if annotations:
        text += "\nif TYPE_CHECKING:\n" + textwrap.indent(_import_sections(annotations), "    ")
    return text


def _imported(nodes: list[ast.stmt], used: set[str]) -> dict[tuple[str | None, str], bool]:
    """(module of a from-import or None, name) -> whether it is imported when the script runs (not only
    under ``if TYPE_CHECKING:``), for each import of ``nodes`` that binds a name in ``used``."""
    found: dict[tuple[str | None, str], bool] = {}
    for node in nodes:
        checking = isinstance(node, ast.If)
        for inner in node.body if checking else [node]:
            for key, bound in _import_keys(inner):
                if bound in used:
                    found[key] = found.get(key, False) or not checking
    return found


def _import_keys(node: ast.stmt) -> list[tuple[tuple[str | None, str], str]]:
    """((module or None, name), the name bound) for each name an import statement imports (none for
    other statements, relative imports, ``as`` names and :data:`SKIPPED` modules)."""
    if isinstance(node, ast.Import):
        return [((None, a.name), a.name.split(".")[0]) for a in node.names if not a.asname]
    if isinstance(node, ast.ImportFrom) and not node.level and node.module.split(".")[0] not in SKIPPED:
        return [((node.module, a.name), a.name) for a in node.names if not a.asname]
    return []


def _without_imports(text: str, loaded: set[tuple[str | None, str]]) -> str:
    """A helper's text without the imports in its body that the script's own imports (``loaded``)
    already make (``import torch`` where the script imports torch), with the blank line that set
    each apart; one that is alone in its block stays."""
    lines = text.splitlines(keepends=True)
    redundant = [node for block in blocks(ast.parse(text)) for node in block if len(block) > 1
                 and _import_keys(node) and all(key in loaded for key, _ in _import_keys(node))
                 and len(_import_keys(node)) == len(node.names)]
    for node in sorted(redundant, key=lambda n: -n.lineno):
        start = node.lineno - 1
        del lines[start:node.end_lineno]
        before = lines[start - 1].rstrip()
        if start < len(lines) and not lines[start].strip() and (not before or before.endswith((":", '"""'))):
            del lines[start]
    return "".join(lines)


def _import_sections(keys: list[tuple[str | None, str]]) -> str:
    """Import statements of (module, name) pairs (module None: ``import name``), standard library first."""
    sections = []
    for standard in (True, False):
        mine = [(module, name) for module, name in keys if _standard(module or name) == standard]
        lines = sorted(f"import {name}" for module, name in mine if module is None)
        modules = sorted({module for module, _ in mine if module is not None})
        lines += [f"from {m} import {', '.join(sorted((n for k, n in mine if k == m), key=_name_order))}"
                  for m in modules]
        if lines:
            sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def _name_order(name: str) -> tuple[int, str]:
    """isort's order of imported names: constants, classes, functions."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2), name.lower()


def _standard(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


# --- deciding what the settings decide ------------------------------------------------------------
