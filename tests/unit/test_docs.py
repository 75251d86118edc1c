"""The README documents every setting; docs/architecture.md every field of the session hash."""

from __future__ import annotations

from pathlib import Path

from shared.settings import Settings
from whisper_streaming.docgen import session_state_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    text = README.read_text()
    missing = [n.upper() for n in Settings.model_fields if f"| `{n.upper()}` |" not in text]
    assert missing == [], f"run python -m whisper_streaming.docgen and update README: {missing}"


def test_the_session_state_table_is_the_declared_one() -> None:
    text = (README.parent / "docs" / "architecture.md").read_text()
    assert session_state_table() in text, "run python -m whisper_streaming.docgen --write"
