"""The gateway's layer: it imports only itself and shared/ (never workers/, whisper_streaming/ or
bench/), and it names the fields of ``session:{id}`` only through shared.session_state."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared.session_state import Field
from tests.conftest import REPO

GATEWAY = sorted((REPO / "gateway").glob("*.py"))
FORBIDDEN = ("workers", "whisper_streaming", "bench")
HASH_COMMANDS = {"hset", "hget", "hmget", "hincrby", "hincrbyfloat", "hdel", "hexists", "hsetnx"}
FIELD_NAMES = {f.value for f in Field}


def imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def literal_fields(tree: ast.AST) -> list[str]:
    """String literals naming a session field in a hash command (argument, list or mapping)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in HASH_COMMANDS
        ):
            continue
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            for sub in ast.walk(arg):
                if isinstance(sub, ast.Constant) and sub.value in FIELD_NAMES:
                    found.append(sub.value)
    return found


@pytest.mark.parametrize("path", GATEWAY, ids=lambda p: p.name)
def test_the_gateway_imports_only_itself_and_shared(path: Path) -> None:
    tree = ast.parse(path.read_text())
    bad = [m for m in imported(tree) if m.split(".")[0] in FORBIDDEN]
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", GATEWAY, ids=lambda p: p.name)
def test_session_hash_fields_are_never_spelled_out(path: Path) -> None:
    assert literal_fields(ast.parse(path.read_text())) == []


def test_the_checks_find_what_they_look_for() -> None:
    tree = ast.parse(
        "from workers.segmenter import X\n"
        "import bench.stats\n"
        "r.hset(k, mapping={'state': 'x'})\n"
        "r.hmget(k, ['segments', 'audio_seconds'])\n"
        "r.hget(k, 'vad_seq')\n"
    )
    assert imported(tree) == ["workers.segmenter", "bench.stats"]
    assert sorted(literal_fields(tree)) == ["audio_seconds", "segments", "state", "vad_seq"]
