"""The import graph of trio_c10k/, read from its source, and any cycle in it.

Every import of one of the package's modules counts: relative or absolute, at the top of a
module or inside a function, and under ``if TYPE_CHECKING:`` too (an import for types is an
arrow as well). Prints each module and the modules it imports, lowest first (a module comes
after everything it imports); exits with status 1, naming the modules, if some import each
other in a circle.

    python tools/import_graph.py                # trio_c10k/, as docs/architecture.md shows it
    python tools/import_graph.py path/to/package
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "trio_c10k"

Graph = dict[str, set[str]]


def module_names(package: Path) -> dict[str, Path]:
    """Each module of ``package`` by its dotted name inside it (``__init__`` for the package
    itself, ``management.commands`` for a subpackage)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(package: Path = PACKAGE) -> Graph:
    """Module name -> the names of the package's modules it imports."""
    modules = module_names(package)
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for imported in _imports(node, name, is_package, package.name, modules):
                if imported != name:
                    graph[name].add(imported)
    return graph


def _imports(node: ast.AST, name: str, is_package: bool, top: str, modules: dict[str, Path]) -> list[str]:
    """The package's modules the import ``node`` of module ``name`` loads.

    Parent packages, which Python imports before any submodule, are no arrow of their own.
    """
    if isinstance(node, ast.Import):
        return [inside for alias in node.names if (inside := _inside(alias.name, top)) in modules]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: from the module's own package, then up one per extra dot
        base = [] if name == "__init__" else name.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        start = ".".join([*base, *(node.module.split(".") if node.module else [])])
    else:
        inside = _inside(node.module or "", top)
        if inside is None:
            return []
        start = inside
    found = []
    for alias in node.names:  # ``from x import y``: y is a module of its own, or a name in x
        submodule = f"{start}.{alias.name}" if start else alias.name
        found.append(submodule if submodule in modules else start or "__init__")
    return [module for module in found if module in modules]


def _inside(dotted: str, top: str) -> str | None:
    """``top.a.b`` -> ``a.b``, ``top`` -> "", anything else -> None."""
    if dotted == top:
        return ""
    return dotted[len(top) + 1 :] if dotted.startswith(top + ".") else None


def cycles(graph: Graph) -> list[list[str]]:
    """The groups of modules that import each other in a circle (Tarjan's strongly connected
    components of more than one module), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layers(graph: Graph) -> dict[str, int]:
    """Each module's layer: 0 if it imports none of the package's modules, else one more than
    the highest layer it imports. The graph must have no cycle."""
    layer: dict[str, int] = {}

    def of(node: str) -> int:
        if node not in layer:
            layer[node] = 1 + max((of(other) for other in graph[node]), default=-1)
        return layer[node]

    for node in graph:
        of(node)
    return layer


def render(graph: Graph) -> str:
    """One line per module, lowest layer first: ``module -> what it imports``."""
    layer = layers(graph)
    width = max(map(len, graph))
    lines = []
    for node in sorted(graph, key=lambda node: (layer[node], node)):
        imported = ", ".join(sorted(graph[node], key=lambda other: (layer[other], other))) or "-"
        lines.append(f"{node:<{width}} -> {imported}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    graph = import_graph(Path(argv[0]) if argv else PACKAGE)
    found = cycles(graph)
    if found:
        for component in found:
            print("import cycle among: " + ", ".join(component))
        return 1
    print(render(graph), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
