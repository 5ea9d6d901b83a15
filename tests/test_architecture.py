"""The package's layers, read from the source: no import cycle, and imports in one direction.

Every import counts: at module level, inside functions, and under ``if TYPE_CHECKING:``.
A cycle through a lazy import is still a cycle: the modules cannot be understood, tested or
moved apart, whatever the interpreter tolerates at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sharedrec

PACKAGE = "sharedrec"
ROOT = Path(sharedrec.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base.pop()  # a module's own name is not part of the package it is relative to
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, target] if target else base)


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of the package that ``name`` imports, anywhere in its source."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, is_package, node.level, node.module)
            # `from pkg import name` imports the module pkg.name when there is one, else pkg.
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # `import a.b.c` names a.b.c; keep the longest prefix that is one of our modules.
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                found.add(".".join(parts))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    return {name: _imports(name, path, names) for name, path in modules.items()}


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle in the component {sorted(component)}")


def _in(module: str, area: str) -> bool:
    return module == area or module.startswith(f"{area}.")


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = _graph()
    assert "sharedrec.read.root" in graph
    assert "sharedrec.errors" in graph["sharedrec.read.root"]  # module level
    assert "sharedrec.backends.base" in graph["sharedrec.read.root"]  # under TYPE_CHECKING
    assert "sharedrec.read.cache" in graph["sharedrec.read.root"]  # inside a function
    # `from sharedrec.format.schema import Manifest` imports the module sharedrec.format.schema.
    assert "sharedrec.format.schema" in graph["sharedrec"]


@pytest.mark.parametrize(
    ("module", "is_package", "level", "target", "expected"),
    [
        ("sharedrec.read.reader", False, 1, "index", "sharedrec.read.index"),
        ("sharedrec.read.reader", False, 2, "errors", "sharedrec.errors"),
        ("sharedrec.k8s", True, 1, "_config", "sharedrec.k8s._config"),
        ("sharedrec.k8s.cli", False, 1, None, "sharedrec.k8s"),
        ("sharedrec.store", False, 0, "sharedrec.errors", "sharedrec.errors"),
    ],
)
def test_relative_imports_resolve(
    module: str, is_package: bool, level: int, target: str | None, expected: str
) -> None:
    assert _resolve(module, is_package, level, target) == expected


def test_no_import_cycle() -> None:
    graph = _graph()
    found = [
        " -> ".join(_one_cycle(graph, set(component)))
        + (f"  (the whole knot: {', '.join(component)})" if len(component) > 2 else "")
        for component in _components(graph)
    ]
    assert not found, "import cycles, one loop of each knot of modules:\n" + "\n".join(found)


READ_MUST_NOT_IMPORT = ("sharedrec.write", "sharedrec.manage", "sharedrec.integrations", "sharedrec.store")

MAY_IMPORT_THE_FACADE = ("sharedrec.cli", "sharedrec.demo", "sharedrec.integrations")
"""Besides ``sharedrec`` itself (its ``__init__.py``, the public face)."""


def test_read_layer_imports_only_downwards() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if _in(module, "sharedrec.read")
        for target in targets
        if any(_in(target, area) for area in READ_MUST_NOT_IMPORT)
    )
    assert not wrong, "read/ imports a layer above it:\n" + "\n".join(wrong)


def test_only_the_public_face_imports_the_facade() -> None:
    wrong = sorted(
        module
        for module, targets in _graph().items()
        if "sharedrec.store" in targets
        and module != "sharedrec"
        and not any(_in(module, allowed) for allowed in MAY_IMPORT_THE_FACADE)
    )
    assert not wrong, (
        "only sharedrec/__init__.py, cli.py, demo.py and integrations/ may import sharedrec.store "
        "(take a StoreRoot instead):\n" + "\n".join(wrong)
    )


def test_the_facade_is_short_delegations() -> None:
    # store.py keeps signatures, docstrings and one-to-three-line bodies; logic lives below it.
    lines = (ROOT / "store.py").read_text().splitlines()
    assert len(lines) <= 400, f"store.py has {len(lines)} lines: move logic into a layer"


def test_one_pointer_compare_and_swap() -> None:
    # Every pointer move (publish, distributed commit, set_current, rollback, promote) goes
    # through write/commit.py, which alone calls the guarded move of write/hold.py.
    callers = {
        module
        for module, path in _modules().items()
        if "move_guarded(" in path.read_text() and module != "sharedrec.write.hold"
    }
    swappers = {module for module, path in _modules().items() if ".swap_pointer(" in path.read_text()}
    assert callers == {"sharedrec.write.commit"}
    # The version catalog (a cache, not a pointer) uses the same compare-and-swap for its file.
    assert swappers == {"sharedrec.write.hold", "sharedrec.format.catalog"}
