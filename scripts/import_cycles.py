"""List the import cycles between lesion's modules; exit 1 if there is any.

Every ``import`` and ``from ... import`` in every ``lesion/**/*.py`` counts, wherever it sits:
at the top, inside a function, under ``if TYPE_CHECKING:``. An import deferred into a function
still ties the two modules together (neither can be understood, tested or moved without the
other), so a cycle is broken by moving code down the layers, not by hiding the import.

How a name resolves:

- ``from .pkg import name`` is an edge to ``pkg.name`` when that is a module of the package,
  and to ``pkg/__init__.py`` otherwise (the name is something ``__init__`` defines or imports).
- ``import a.b.c`` is an edge to ``a.b.c``, and to ``a.b`` and ``a``: importing a module runs
  the ``__init__`` of every package above it, whatever those import in turn. A package the
  importing module sits in has already run its ``__init__`` (the module was imported through
  it), so that edge is not drawn: a package's ``__init__`` importing its own modules is the
  usual shape, not a cycle. The same holds for ``from .pkg.mod import name``.
- ``importlib.import_module("lesion.x")`` with a literal string counts; a computed name (the
  CLI's command discovery, the lazy top-level exports) cannot be resolved and is left out.

With no module cycle, it also checks the layering: each top-level module or subpackage is a part, and
two parts that import each other (round any loop) fail it too. It prints the levels of both graphs:
the longest chain of imports between modules, and between parts.

Usage: ``python scripts/import_cycles.py [ROOT]`` (ROOT defaults to the repository's ``lesion``).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package (``__init__`` names its package)."""
    root = package_dir.parent
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _base(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute dotted name that a relative import's dots and module part refer to."""
    anchor = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, *([target] if target else [])])


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules, or None for outside imports."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _with_packages(target: str | None, module: str, modules: dict[str, Path]) -> set[str]:
    """``target`` and each package above it whose ``__init__`` importing ``target`` runs: those
    that do not also hold ``module`` (their ``__init__`` ran before ``module`` could)."""
    if target is None:
        return set()
    found, parts = {target}, target.split(".")[:-1]
    while parts:
        package = ".".join(parts)
        if package in modules and not (module == package or module.startswith(package + ".")):
            found.add(package)
        parts.pop()
    return found


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The lesion modules ``module`` imports anywhere in its file, with the packages whose
    ``__init__`` those imports run."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(_resolve(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node.level, node.module) if node.level else (node.module or "")
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else _resolve(base, modules))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and not node.args[0].value.startswith(".")):
            found.add(_resolve(node.args[0].value, modules))
    found.discard(None)
    ran = set().union(*(_with_packages(target, module, modules) for target in found))
    ran.discard(module)
    return ran


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    modules = module_names(package_dir)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; the components of more than one module, each sorted."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components)


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first), to print."""
    members, start = set(component), component[0]
    parents, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError("a strongly connected component always has a cycle")


def levels(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each node's level in an acyclic graph: 1 for a node that imports nothing of the graph, else one
    more than the highest node it imports. The highest level is the longest chain of imports."""
    level: dict[str, int] = {}
    for start in sorted(graph):
        work = [start]
        while work:
            node = work[-1]
            todo = [child for child in graph[node] if child not in level and child != node]
            if todo:
                work.extend(todo)
                continue
            work.pop()
            level[node] = 1 + max((level[child] for child in graph[node] if child != node), default=0)
    return level


def part_of(module: str) -> str:
    """The part a module belongs to: the package's top-level module or subpackage it sits in."""
    return ".".join(module.split(".")[:2])


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The imports between parts (each top-level module or subpackage one node), a part's own left out."""
    parts: dict[str, set[str]] = {}
    for module, targets in graph.items():
        parts.setdefault(part_of(module), set()).update(part_of(t) for t in targets)
    return {part: targets - {part} for part, targets in parts.items()}


def main(argv: list[str]) -> int:
    package_dir = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "lesion"
    graph = import_graph(package_dir)
    components = strongly_connected(graph)
    for component in components:
        print(f"cycle among {len(component)} modules: {', '.join(component)}")
        print("  e.g. " + " -> ".join(one_cycle(graph, component)))
    print(f"import cycles: {len(components)} ({len(graph)} modules, "
          f"{sum(len(v) for v in graph.values())} imports between them)")
    if components:
        return 1
    parts = part_graph(graph)
    back = strongly_connected(parts)  # two parts importing each other: the layers are not a stack
    for component in back:
        print(f"parts importing each other: {', '.join(component)}")
        print("  e.g. " + " -> ".join(one_cycle(parts, component)))
    print(f"levels: {max(levels(graph).values(), default=0)} of modules; "
          + (f"{max(levels(parts).values(), default=0)} of parts ({len(parts)} top-level modules and subpackages)"
             if not back else f"parts: {len(back)} cycles"))
    return 1 if back else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
