"""The shape of the code, checked: no module over 500 lines, no import cycles, a core that knows no
built-in plugin and no adapter (``import suture`` staying light is checked in test_plugins.py)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "suture"
#: subpackages that build on the core; the core never imports them (it asks the hooks instead)
EXTENSIONS = ("suture.plugins", "suture.adapters", "suture.sandbox", "suture.testing", "suture.integrations")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _runtime_imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports at run time (lazy imports too, not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target not in (name, "suture"):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _runtime_imports(name, path, known) for name, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_over_500_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_core_imports_no_plugin_and_no_adapter():
    graph = _graph()
    bad = {name: sorted(t for t in targets if t.startswith(EXTENSIONS))
           for name, targets in graph.items() if not name.startswith(EXTENSIONS)}
    assert {k: v for k, v in bad.items() if v} == {}


def test_plugins_depend_on_the_core_never_on_adapters():
    graph = _graph()
    bad = {name: sorted(t for t in targets if t.startswith("suture.adapters"))
           for name, targets in graph.items() if name.startswith("suture.plugins")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_checker_sees_a_cycle_and_a_lazy_import():
    """The checks above could pass vacuously; they do not on a graph that has the faults."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    graph = _graph()
    assert "suture.context" in graph["suture.step"]  # a module-level import is seen
    assert "suture.recovery" in graph["suture.step"]  # and so is a lazy one inside a function
