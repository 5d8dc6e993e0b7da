"""Print the import cycles among the modules of a package, counting imports inside functions.

Usage: python scripts/import_cycles.py [PACKAGE_DIR]   (default: kg/ beside this script)

Every `import` and `from ... import` statement counts, wherever it sits (module level, inside a
function, a class, a try), except those under `if TYPE_CHECKING:`, which never run. A cycle is a
strongly connected set of modules; each is printed with the import lines that close it. The exit
code is 1 when there is at least one cycle, so CI can use the script as a check.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    """One import statement: the importing module, the imported module, and where it is."""

    source: str
    target: str
    path: Path
    line: int


def module_names(package_dir: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (`pkg/__init__.py` is `pkg`)."""
    root = package_dir.parent
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of a tree at any depth, skipping `if TYPE_CHECKING:` bodies."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            # The `else:` branch does run.
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest known module that `name` denotes (`a.b.func` -> `a.b`), or None if foreign."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def edges_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Edge]:
    """The package-internal imports of one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in _imports(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                # Relative: climb from the module's own package.
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b` names the module a.b when b is one, else something inside a.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module:
                yield Edge(module, resolved, path, node.lineno)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def main(argv: list[str]) -> int:
    package_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent.parent / "kg"
    package_dir = package_dir.resolve()
    modules = module_names(package_dir)
    all_edges = [edge for name, path in modules.items() for edge in edges_of(name, path, modules)]
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for edge in all_edges:
        graph[edge.source].add(edge.target)
    found = cycles(graph)
    root = package_dir.parent
    for number, component in enumerate(found, 1):
        members = set(component)
        print(f"cycle {number}: {' <-> '.join(component)}")
        for edge in sorted(set(all_edges), key=lambda e: (e.source, e.line, e.target)):
            if edge.source in members and edge.target in members:
                where = f"{edge.path.relative_to(root)}:{edge.line}"
                print(f"    {edge.source} -> {edge.target}  ({where})")
    print(f"{len(found)} import cycle(s) among {len(modules)} modules of {package_dir.name}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
