"""The ``asyncapi`` command: the bus as an AsyncAPI 3.0.0 document (routing/asyncapi.py).

::

    faust -A metrobus_app asyncapi [--out FILE] [--offline]

Without ``--out`` the document goes to standard output. The routes in use are the rules
stored in the bus (read from the broker, as ``routes list`` does), else the rules file;
``--offline`` asks no broker and describes the rules file's.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from faust.cli import AppCommand, option

from metrobus_app.routing.asyncapi import asyncapi_document, routes_in_use
from metrobus_app.routing.rule_set import RouteRules, RuleEditor, read_stored

if TYPE_CHECKING:
    import faust

    from metrobus_app.core.bus import Bus


async def routes_for_document(bus: Bus, *, offline: bool) -> dict[str, Any] | None:
    """The routes in use as the command sees them: stored in the bus (unless ``offline``), else the file."""
    rules = RouteRules.of(bus)
    if rules is None or offline:
        return None  # the document's own: no rules, or the rules file (a command holds no copy of the stored ones)
    editor = RuleEditor(rules, lambda: read_stored(bus.settings, rules.cache.changelog), "cli")
    document, source, revision = await editor.current()
    return routes_in_use(document, source, revision)


def register_asyncapi_command(app: faust.App) -> None:
    """Add ``asyncapi`` to ``app``'s commands."""

    @app.command(
        option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the document to FILE."),
        option("--offline", is_flag=True, help="Ask no broker: the routes of the rules file, not those stored."),
    )
    async def asyncapi(self: AppCommand, out: Path | None, offline: bool) -> None:
        """Describe the bus as an AsyncAPI 3.0.0 document (JSON): topics, messages, routes in use."""
        bus: Bus = self.app.bus  # type: ignore[attr-defined]
        document = asyncapi_document(bus, await routes_for_document(bus, offline=offline))
        text = json.dumps(document, indent=2) + "\n"
        if out is None:
            click.echo(text, nl=False)
        else:
            await asyncio.to_thread(out.write_text, text, encoding="utf-8")
            click.echo(f"wrote {out}: {len(document['channels'])} channels", err=True)
