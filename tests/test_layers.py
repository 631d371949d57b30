"""The package's shape, read from its own imports: the layers of docs/explanation/architecture.md.

A module may import from its own package and from the layers below it, never from above;
no import cycle; no module over 700 lines; few modules at the package root. Imports under
``TYPE_CHECKING`` count too: a layer that needs an object from above takes a Protocol of
its own or a parameter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "triodist"

#: Top first. ``testing`` sits beside the layers: the demo and the tests use it, nothing in
#: the server does.
LAYERS = [
    ["triodist.__main__", "triodist.cli", "triodist.demo", "triodist.replay", "triodist.workers"],
    ["triodist.config"],
    ["triodist.server", "triodist.reload"],
    ["triodist.ops"],
    ["triodist.frontends"],
    ["triodist.query"],
    ["triodist.rules", "triodist.asyncproc"],
    ["triodist.backends"],
    ["triodist.cache"],
    ["triodist.system"],
    ["triodist.wire"],
    ["triodist.util"],
]
TOP = LAYERS[0]
MAX_LINES = 700
MAX_ROOT_MODULES = 8


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(path: Path) -> set[str]:
    """The triodist modules ``path`` imports (``from triodist.ops import rings`` is
    triodist.ops.rings)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("triodist"):
            assert not node.level, f"{path}: relative import"
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if is_module(sub) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("triodist"))
    return found


def rank(name: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in layer):
            return i
    return None


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    loose = [
        n
        for n in MODULES
        if rank(n) is None and n != "triodist" and not n.startswith("triodist.testing")
    ]
    assert not loose, f"modules in no layer: {loose}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down_only(name: str) -> None:
    here = rank(name)
    if here is None:  # the package's face, or testing/ (beside the layers)
        return
    upward = sorted(t for t in GRAPH[name] if (r := rank(t)) is not None and r < here)
    assert not upward, f"{name} imports from above its layer: {upward}"
    if name not in TOP:
        testing = sorted(t for t in GRAPH[name] if t.startswith("triodist.testing"))
        assert not testing, f"{name} imports the test fakes: {testing}"


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH.get(name, ())):
            if target not in GRAPH:
                continue
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                walk(target)
        path.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            walk(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_too_long(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]}: {lines} lines"


def test_few_modules_at_the_root() -> None:
    root = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(root) <= MAX_ROOT_MODULES, root
