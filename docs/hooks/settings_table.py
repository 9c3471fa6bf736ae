"""MkDocs hook: the settings page's table, made from the settings' own definitions.

``docs/settings.md`` holds the marker below; this hook replaces it with one row per field of
``metrobus_app.Settings`` (its ``env`` name, its default and its ``doc``), so the page cannot drift from the
code. A settings page without the marker fails the build.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

MARKER = "<!-- settings-table -->"
PAGE = "settings.md"


def settings_class() -> type:
    """The ``Settings`` dataclass, by its public name (wherever the package keeps its definition)."""
    from metrobus_app import Settings

    if not dataclasses.is_dataclass(Settings):
        raise RuntimeError("metrobus_app.Settings is no dataclass: the settings table cannot be made")
    return Settings


def format_default(value: Any) -> str:
    """A default as the table shows it: code, or *(empty)* for an empty string or list."""
    if isinstance(value, tuple | list):
        value = ",".join(str(part) for part in value)
    if isinstance(value, Path):
        value = value.as_posix()
    text = str(value)
    return f"`{text}`" if text else "*(empty)*"


def cell(text: str) -> str:
    """Text that cannot break out of a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    """The Markdown table of every setting: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(settings_class()):
        env, doc = field.metadata["env"], field.metadata["doc"]
        rows.append(f"| `{env}` | {cell(format_default(field.default))} | {cell(doc)} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker of the settings page with the table."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise RuntimeError(f"{PAGE} has lost its marker {MARKER!r}: the settings table has nowhere to go")
    return markdown.replace(MARKER, settings_table())
