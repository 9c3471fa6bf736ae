"""Framework CLI commands, e.g. ``faust -A metrobus_app settings``."""

from __future__ import annotations

import click
import faust
from faust.cli import AppCommand

from .settings import Settings


def register_commands(app: faust.App) -> None:
    """Add the framework's commands to ``app``."""

    @app.command()
    async def settings(self: AppCommand) -> None:
        """Show every METROBUS_* setting: its value here, and what it means."""
        current: Settings = self.app.settings  # type: ignore[attr-defined]
        for env, value, default, doc in current.describe():
            click.echo(f"{env}={value}    # {doc} (default: {default})")
