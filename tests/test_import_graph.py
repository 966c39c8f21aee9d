"""The import graph of ``src/storm`` has no cycles (imports inside functions count; ``TYPE_CHECKING`` ones do not)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "storm"


def _module_name(file: Path, root: Path) -> str:
    parts = file.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(file: Path, name: str, modules: set[str]) -> set[str]:
    """The storm modules ``file`` imports (outside ``if TYPE_CHECKING:`` blocks)."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {_module_name(f, root): f for f in root.rglob("*.py")}
    return {name: _imports(file, name, set(files)) for name, file in files.items()}


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert cycles == [], f"import cycles: {[sorted(c) for c in cycles]}"


def test_the_check_sees_a_cycle_and_skips_type_checking_imports(tmp_path):
    root = tmp_path / "storm"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "_a.py").write_text("def f():\n    from ._b import g\n")
    (root / "_b.py").write_text("from ._a import f\n")
    (root / "_c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._a import f\n")
    (root / "_d.py").write_text("from . import _c\n")
    graph = _graph(root)
    assert graph["storm._c"] == set() and graph["storm._d"] == {"storm._c"}
    assert _cycles(graph) == [frozenset({"storm._a", "storm._b"})]
