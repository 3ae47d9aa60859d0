"""The package itself: cheap to import, a small typed public surface, docs on every public function."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import lora_nb


def test_import_does_not_load_torch():
    code = ("import sys, lora_nb; print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') "
            "if m in sys.modules))")
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


def import_graph(root: "Path | None" = None, name: str = "lora_nb") -> dict[str, set[str]]:
    """The modules of the package at ``root`` (lora_nb's by default) and the modules of it each imports,
    lazy imports inside functions included."""
    import ast
    from pathlib import Path

    root = root or Path(lora_nb.__file__).parent
    files = {".".join((name,) + p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
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
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(name):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith(name)}
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


def layers() -> dict[str, int]:
    """Package (or top-level module) → its layer number, from the table in docs/architecture.md: the
    layer order is written there once."""
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    return {name: int(number) for number, name in re.findall(r"^\| (\d+) \| `(\w+)` \|", text, re.M)}


def test_every_package_has_a_layer():
    from pathlib import Path

    root = Path(lora_nb.__file__).parent
    found = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    found |= {p.stem for p in root.glob("*.py") if p.name != "__init__.py"}
    assert found == set(layers())


def upward_imports(graph: dict[str, set[str]], order: dict[str, int]) -> list[str]:
    """Every import in ``graph`` from a module to one of a higher layer (the package root counts as the top)."""
    top = max(order.values()) + 1

    def layer(module: str) -> int:
        parts = module.split(".")
        return order[parts[1]] if len(parts) > 1 else top

    return [f"{module} (layer {layer(module)}) imports {dep} (layer {layer(dep)})"
            for module, deps in sorted(graph.items()) if "." in module
            for dep in sorted(deps) if layer(dep) > layer(module)]


def test_imports_go_only_to_lower_layers():
    wrong = upward_imports(import_graph(), layers())
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_catches_a_lazy_upward_import(tmp_path):
    package = tmp_path / "pkg"
    for folder in ("core", "training"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "training" / "trainer.py").write_text("from ..core.files import x\n")
    (package / "core" / "files.py").write_text("x = 1\n\ndef f():\n    from ..training.trainer import train\n")
    graph = import_graph(package, "pkg")

    assert upward_imports(graph, {"core": 2, "training": 7}) == [
        "pkg.core.files (layer 2) imports pkg.training.trainer (layer 7)"]
    (package / "core" / "files.py").write_text("x = 1\n")
    assert upward_imports(import_graph(package, "pkg"), {"core": 2, "training": 7}) == []


def test_no_module_is_over_400_lines():
    """A module that grows past a few hundred lines has two concerns: split it along them."""
    from pathlib import Path

    long = {str(p.relative_to(Path(lora_nb.__file__).parent)): n for p in Path(lora_nb.__file__).parent.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long


def test_no_private_name_crosses_a_module():
    """A name another module needs is public in its owner: no ``from .x import _name`` anywhere in lora_nb."""
    import ast
    from pathlib import Path

    found = [f"{path.relative_to(Path(lora_nb.__file__).parent)}: {alias.name}"
             for path in Path(lora_nb.__file__).parent.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)
             and (node.level or (node.module or "").startswith("lora_nb"))
             for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not found


def test_the_api_never_imports_the_notebook_layer():
    for module, deps in import_graph().items():
        if module != "lora_nb" and not module.startswith("lora_nb.notebook"):
            assert not {d for d in deps if d.startswith("lora_nb.notebook")}, module
