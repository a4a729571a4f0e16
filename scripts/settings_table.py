"""The settings table of docs/configuration.md, generated from the one Settings class so the two cannot drift apart.

`python scripts/settings_table.py --write` rewrites the block between the settings-table markers there.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

from service.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
START, END = "<!-- settings-table -->", "<!-- /settings-table -->"


def table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None or default is PydanticUndefined else f"`{default}`"
        rows.append(f"| `DARLING_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)


def doc_block(text: str) -> str:
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write() -> None:
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    else:
        print(table())
