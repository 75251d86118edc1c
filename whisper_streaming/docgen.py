"""Prints the README's configuration table from :class:`shared.settings.Settings` (so the docs
cannot drift from the code: a test checks that every setting is in the README)."""

from __future__ import annotations

from pydantic_core import PydanticUndefined

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


def write_readme(path: str = "README.md") -> None:
    """Replace the table under "## Configuration" in the README."""
    with open(path) as fh:
        text = fh.read()
    start = text.index("| Variable | Default | Meaning |")
    end = text.index("\n\n", start)
    with open(path, "w") as fh:
        fh.write(text[:start] + config_table() + text[end:])


if __name__ == "__main__":
    import sys

    if "--write" in sys.argv:
        write_readme()
    else:
        print(config_table())
