"""Prints the README's configuration table from :class:`shared.settings.Settings` and
docs/architecture.md's session-state table from :mod:`shared.session_state` (so the docs cannot
drift from the code: tests check both); ``--write`` rewrites them in place."""

from __future__ import annotations

from pydantic_core import PydanticUndefined

from shared.session_state import FIELDS
from shared.settings import Settings


def config_table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "host-pid"
        elif field.default is PydanticUndefined or field.default is None:
            default = "(unset)"
        elif field.default == "":
            default = '""'
        else:
            default = str(field.default)
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        if not desc and field.annotation is not None:
            desc = str(field.annotation).replace("typing.", "")
        rows.append(f"| `{name.upper()}` | `{default}` | {desc} |")
    return "\n".join(rows)


def session_state_table() -> str:
    """docs/architecture.md's table of the ``session:{id}`` hash, from shared/session_state.py."""
    rows = ["| field | type | written by | read by | meaning |", "|---|---|---|---|---|"]
    for f, doc in FIELDS.items():
        meaning = doc.meaning.replace(":class:`State`", "`State`").replace("|", "\\|")
        rows.append(f"| `{f}` | {doc.type} | {doc.writer} | {doc.reader} | {meaning} |")
    return "\n".join(rows)


def _replace_table(path: str, header: str, table: str) -> None:
    with open(path) as fh:
        text = fh.read()
    start = text.index(header)
    end = text.index("\n\n", start)
    with open(path, "w") as fh:
        fh.write(text[:start] + table + text[end:])


def write_architecture(path: str = "docs/architecture.md") -> None:
    _replace_table(path, "| field | type | written by | read by | meaning |", session_state_table())


def write_readme(path: str = "README.md") -> None:
    """Replace the table under "## Configuration" in the README."""
    _replace_table(path, "| Variable | Default | Meaning |", config_table())


if __name__ == "__main__":
    import sys

    if "--write" in sys.argv:
        write_readme()
        write_architecture()
    else:
        print(config_table())
