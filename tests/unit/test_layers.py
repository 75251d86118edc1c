"""The layering contract, enforced: which package may import which, and no import cycles.

    bench/               benchmarks                          may import everything below
    whisper_streaming/   the CLI, `up` supervisor, dev tools (soak, corpus, evaluation, replay)
    gateway/  workers/   the two services, side by side: never import each other
    shared/              settings, schemas, keys, session state, Redis/audio/runtime helpers

    loadtest/            the Locust scenario: a client of the service like any other; of ours
                         it uses only shared/ (audio decoding)

A module may import its own package and the packages below it, nothing else of ours. Every
``import`` counts, wherever it is written (top level, inside a function, under TYPE_CHECKING):
a lazy import is still a dependency. docs/architecture.md shows the same picture.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

ALLOWED: dict[str, set[str]] = {
    "shared": {"shared"},
    "workers": {"workers", "shared"},
    "gateway": {"gateway", "shared"},
    "whisper_streaming": {"whisper_streaming", "gateway", "workers", "shared"},
    "bench": {"bench", "whisper_streaming", "gateway", "workers", "shared"},
    "loadtest": {"loadtest", "shared"},
}
"""Package -> the packages of ours it may import."""


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> Iterable[str]:
    """Every module name ``path`` imports (absolute, relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(root, path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            yield base
            # `from pkg import module` imports a module too
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (only names that are real modules)."""
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    return {
        name: {m for m in imports_of(root, path) if m in files and m != name}
        for name, path in files.items()
    }


def violations(g: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, deps in sorted(g.items()):
        pkg = mod.split(".")[0]
        for dep in sorted(deps):
            if dep.split(".")[0] not in ALLOWED[pkg]:
                out.append(f"{mod} imports {dep}")
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
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
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_no_package_imports_a_layer_above_it_or_its_sibling() -> None:
    assert violations(graph(REPO, ALLOWED)) == []


def test_no_import_cycles() -> None:
    assert cycles(graph(REPO, ALLOWED)) == []


def test_every_package_of_ours_is_in_the_contract() -> None:
    """A new top-level package must be given its place in :data:`ALLOWED`."""
    ours = {
        p.name
        for p in REPO.iterdir()
        if (p / "__init__.py").exists() and p.name not in ("tests", "deploy")
    }
    assert ours == set(ALLOWED)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    def write(rel: str, text: str = "") -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    for pkg in ALLOWED:
        write(f"{pkg}/__init__.py")
    write("shared/a.py", "import json\n")
    write("workers/w.py", "from shared import a\n")
    write("gateway/g.py", "def f():\n    from workers.w import x\n")  # lazy: still counts
    write(
        "workers/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import y\n"
    )
    write("workers/y.py", "from workers.x import z\n")
    return tmp_path


def test_the_checker_sees_lazy_sibling_imports_and_cycles(tree: Path) -> None:
    g = graph(tree, ALLOWED)
    assert g["workers.w"] == {"shared", "shared.a"}
    assert violations(g) == ["gateway.g imports workers.w"]
    assert cycles(g) == [["workers.x", "workers.y"]]
