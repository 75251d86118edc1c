"""The session hash is declared once (shared/session_state.py): parsing, writing, and a check that
no other module spells a field name in a Redis hash call or a Lua script."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from shared.session_state import (
    FIELDS,
    SET_PROMPT_LUA,
    Field,
    SessionView,
    SpecField,
    State,
    mapping,
    spec_field,
)

REPO = Path(__file__).resolve().parents[2]
HASH_CALLS = {"hset", "hget", "hmget", "hgetall", "hincrby", "hdel", "hexists", "hsetnx"}
NAMES = {f.value for f in Field}


def test_every_field_is_documented() -> None:
    assert set(FIELDS) == set(Field)


def test_a_view_parses_what_redis_returns() -> None:
    raw = {b"state": b"detached", b"attach": b"2", b"samples": b"16000", b"owner": b"alice"}
    raw |= {b"audio_seconds": b"1.5", b"prompt": "caf\u00e9".encode(), b"other": b"x"}
    view = SessionView.parse(raw)
    assert view.exists and view.state is State.DETACHED
    assert (view.attach, view.samples, view.owner) == (2, 16000, "alice")
    assert view.audio_seconds == 1.5 and view.prompt == "caf\u00e9"
    assert view.segments is None and view.vad_ckpt is None


def test_a_hash_without_the_gateways_state_is_not_a_session() -> None:
    """A worker's late write (``final_seg``) must not make an expired session resumable."""
    assert not SessionView.parse({b"final_seg": b"3"}).exists
    assert not SessionView.parse({b"state": b"nonsense"}).exists


def test_mapping_and_spec_fields_give_plain_names() -> None:
    assert mapping({Field.STATE: State.ENDED, Field.SEQ: 4}) == {"state": "ended", "seq": 4}
    assert type(next(iter(mapping({Field.SEQ: 1})))) is str
    assert spec_field(7, SpecField.DONE) == "7:d"
    assert "'prompt_seg'" in SET_PROMPT_LUA and "'prompt'" in SET_PROMPT_LUA


def spelled_fields(path: Path) -> list[str]:
    """Field names written as string literals in a hash call (``hget(key, "state")``, an HSET
    mapping) or quoted inside a Lua script."""
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in HASH_CALLS:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Constant) and sub.value in NAMES:
                    found.append(f"{path.name}:{sub.lineno} {sub.value!r}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for name in re.findall(r"'([a-z_]+)'", node.value):
                if name in NAMES and "redis.call" in node.value:
                    found.append(f"{path.name}:{node.lineno} Lua '{name}'")
    return found


@pytest.mark.parametrize("package", ["gateway", "workers", "shared"])
def test_no_module_but_the_declaration_spells_a_field(package: str) -> None:
    modules = [p for p in (REPO / package).rglob("*.py") if p.name != "session_state.py"]
    assert [hit for p in modules for hit in spelled_fields(p)] == []


def test_the_check_finds_a_spelled_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "async def f(r, key):\n"
        "    await r.hget(key, 'vad_seq')\n"
        "    await r.hset(key, mapping={'state': 'ended'})\n"
        "LUA = \"redis.call('HSET', KEYS[1], 'final_seg', 1)\"\n"
    )
    assert len(spelled_fields(bad)) == 3
