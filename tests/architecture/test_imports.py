"""The package's shape: no import cycles between files (imports inside functions counted) and
dependencies that flow one way (DESIGN.md: datamodules and metrics know nothing of methods;
methods sit below the run, the sweep and the report; the command line sits on top).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("xmodal_bench", "datamodules")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules a file imports anywhere in it (module level, functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            # the longest project module the name starts with (`a.b.c` for `from a.b import c`)
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = _imports(path, modules) - {name}
        # a module importing a submodule through its package, or a package its own submodules, is
        # Python's package mechanics, not a dependency between two concepts
        graph[name] = {e for e in edges if not e.startswith(name + ".") and not name.startswith(e + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


# layer -> packages it must never import
FORBIDDEN = {
    "datamodules": ("xmodal_bench.methods", "xmodal_bench.run", "xmodal_bench.sweep", "xmodal_bench.report", "xmodal_bench.cli", "xmodal_bench.commands"),
    "xmodal_bench.metrics": ("xmodal_bench.methods", "xmodal_bench.retrieval", "xmodal_bench.run", "xmodal_bench.sweep", "xmodal_bench.report", "xmodal_bench.cli", "xmodal_bench.commands", "datamodules"),
    "xmodal_bench.losses": ("xmodal_bench.methods", "xmodal_bench.run", "xmodal_bench.sweep", "xmodal_bench.report", "xmodal_bench.cli", "xmodal_bench.commands"),
    "xmodal_bench.retrieval": ("xmodal_bench.methods", "xmodal_bench.run", "xmodal_bench.sweep", "xmodal_bench.report", "xmodal_bench.cli", "xmodal_bench.commands"),
    "xmodal_bench.methods": ("xmodal_bench.run", "xmodal_bench.sweep", "xmodal_bench.report", "xmodal_bench.cli", "xmodal_bench.commands"),
    "xmodal_bench.run": ("xmodal_bench.sweep", "xmodal_bench.cli", "xmodal_bench.commands"),
    "xmodal_bench.report": ("xmodal_bench.sweep", "xmodal_bench.run", "xmodal_bench.cli", "xmodal_bench.commands"),
    "xmodal_bench.sweep": ("xmodal_bench.cli", "xmodal_bench.commands"),
}  # fmt: skip


def test_dependencies_flow_one_way() -> None:
    graph = _graph()
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        for layer, banned in FORBIDDEN.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if any(target == b or target.startswith(b + ".") for b in banned)
    ]
    assert wrong == []
