"""The settings page's table comes from the settings' own definitions (docs/hooks/settings_table.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from metrobus_app import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def hook():
    spec = importlib.util.spec_from_file_location("settings_table_hook", DOCS / "hooks" / "settings_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def page(uri: str) -> SimpleNamespace:
    return SimpleNamespace(file=SimpleNamespace(src_uri=uri))


def test_the_settings_page_gets_a_row_for_every_setting_with_its_default_and_doc():
    settings_table = hook()
    markdown = (DOCS / "settings.md").read_text()
    assert settings_table.MARKER in markdown
    built = settings_table.on_page_markdown(markdown, page("settings.md"), None, None)
    assert settings_table.MARKER not in built
    rows = [line for line in built.splitlines() if line.startswith("| `METROBUS_")]
    fields = dataclasses.fields(Settings)
    assert len(rows) == len(fields)
    for row, field in zip(rows, fields, strict=True):
        assert row.startswith(f"| `{field.metadata['env']}` | ")
        assert field.metadata["doc"].replace("|", "\\|") in row
    assert "| `METROBUS_PARTITIONS` | `4` |" in built
    assert "| `METROBUS_MODULES` | `agents` |" in built
    assert "| `METROBUS_SASL_PASSWORD` | *(empty)* |" in built


def test_other_pages_are_left_as_they_are_and_a_lost_marker_fails_the_build():
    settings_table = hook()
    assert settings_table.on_page_markdown("text <!-- settings-table -->", page("index.md"), None, None) == (
        "text <!-- settings-table -->"
    )
    with pytest.raises(RuntimeError, match="marker"):
        settings_table.on_page_markdown("# Settings\n", page("settings.md"), None, None)
