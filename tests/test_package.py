"""The package itself: cheap to import, a small typed public surface, docs on every public function."""

from __future__ import annotations

import inspect
import subprocess
import sys

import lora_nb


def test_import_does_not_load_torch():
    code = "import sys, lora_nb; print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_resolves_and_has_an_example():
    for name in lora_nb.__all__:
        obj = getattr(lora_nb, name)
        doc = inspect.getdoc(obj) or ""
        assert doc, name
        if inspect.isfunction(obj):
            assert "Example" in doc, f"{name} has no example in its docstring"


def test_unknown_attribute_is_an_attribute_error():
    try:
        lora_nb.trian  # noqa: B018
    except AttributeError as e:
        assert "trian" in str(e)
    else:
        raise AssertionError("no AttributeError")


def import_graph() -> dict[str, set[str]]:
    """lora_nb's modules and the lora_nb modules each imports, lazy imports inside functions included."""
    import ast
    from pathlib import Path

    root = Path(lora_nb.__file__).parent
    files = {".".join(("lora_nb",) + p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
                found |= {f"{base}.{a.name}" for a in node.names} | {base}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lora_nb"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("lora_nb")}
        graph[module] = {m for m in found if m in files and m != module}
    return graph


def test_imports_flow_one_way():
    graph = import_graph()
    graph["lora_nb"] -= {"lora_nb.notebook"}  # %load_ext's entry point: it loads the notebook layer on purpose
    order, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "open":
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if state.get(module) == "done":
            return
        state[module] = "open"
        for dep in sorted(graph[module]):
            visit(dep, path + [module])
        state[module] = "done"
        order.append(module)

    for module in sorted(graph):
        visit(module, [])
    assert len(order) == len(graph)


def test_the_api_never_imports_the_notebook_layer():
    for module, deps in import_graph().items():
        if module != "lora_nb" and not module.startswith("lora_nb.notebook"):
            assert not {d for d in deps if d.startswith("lora_nb.notebook")}, module
