"""The package's import graph: edges between its groups, import cycles, and breaches of the layer rules.

    python scripts/imports.py

Reads every import with `ast` (module level, inside functions, under `if TYPE_CHECKING:`), so an
import that only runs later still counts: the layers are about what depends on what, not about
load order. Prints the edge counts between groups, each cycle, each violation and a verdict;
exits 1 when there is a cycle or a violation. tests/test_layers.py calls the functions below.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "slurm_autoresearch"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE
GROUPS = ("core", "executors", "planners", "probe", "views", "loop", "cli")
# What each group may import besides itself; cli, on top, may import everything.
ALLOWED = {
    "core": set(),
    "executors": {"core"},
    "planners": {"core"},
    "probe": {"core", "executors"},
    "views": {"core", "executors"},
    "loop": {"core", "executors", "planners", "probe", "views"},
    "cli": set(GROUPS),
}

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of its first import}


def modules(source: Path = SOURCE) -> dict[str, Path]:
    """Every module of the package by dotted name; a package is its `__init__.py`."""
    found: dict[str, Path] = {}
    for path in sorted(source.rglob("*.py")):
        parts = [source.name, *path.relative_to(source).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def group(module: str) -> str:
    parts = module.split(".")[1:]
    return parts[0] if parts and parts[0] in GROUPS else "core"


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _targets(node: ast.Import | ast.ImportFrom, module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules one import statement loads, parent packages' `__init__` included."""
    submodules: set[str] = set()
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:
            here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            here = here[: len(here) - node.level + 1]
            base = ".".join([*here, *([base] if base else [])])
        named = {base}
        # `from . import x` where x is a submodule loads x itself.
        submodules = {f"{base}.{alias.name}" for alias in node.names} & known
    loaded = {a for name in named | submodules for a in _ancestors(name) if a in known}
    loaded |= named & known
    # The importer's own packages were loaded before it ran, and it is loading itself: no edge to them.
    return (loaded - set(_ancestors(module)) - {module}) | submodules


def build_graph(source: Path = SOURCE) -> Graph:
    found = modules(source)
    graph: Graph = {name: {} for name in found}
    for name, path in found.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, name, path, set(found)):
                    graph[name].setdefault(target, node.lineno)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module, and modules that import themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the package is far too small to need iteration
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def violations(graph: Graph) -> list[str]:
    out = []
    for source, targets in sorted(graph.items()):
        for target, line in sorted(targets.items(), key=lambda item: (item[1], item[0])):
            here, there = group(source), group(target)
            if here != there and there not in ALLOWED[here]:
                out.append(f"{source}:{line} imports {target} ({here} may not import {there})")
    return out


def table(graph: Graph) -> str:
    counts = {(a, b): 0 for a in GROUPS for b in GROUPS}
    for source, targets in graph.items():
        for target in targets:
            counts[group(source), group(target)] += 1
    rows = [f"{'importer':<10}" + "".join(f"{b:>10}" for b in GROUPS)]
    for a in GROUPS:
        rows.append(f"{a:<10}" + "".join(f"{counts[a, b] or '.':>10}" for b in GROUPS))
    return "\n".join(rows)


def main() -> int:
    graph = build_graph()
    found_cycles, found_violations = cycles(graph), violations(graph)
    print(f"module edges between groups (row imports column), {len(graph)} modules:\n{table(graph)}\n")
    print(f"cycles: {len(found_cycles)}")
    for component in found_cycles:
        print("  " + " <-> ".join(component))
    print(f"violations: {len(found_violations)}")
    for violation in found_violations:
        print("  " + violation)
    ok = not found_cycles and not found_violations
    print("verdict: " + ("layers hold, no cycles" if ok else "layers broken, see above"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
