"""The README documents every setting."""

from __future__ import annotations

from pathlib import Path

from shared.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    text = README.read_text()
    missing = [n.upper() for n in Settings.model_fields if f"| `{n.upper()}` |" not in text]
    assert missing == [], f"run python -m whisper_streaming.docgen and update README: {missing}"
