"""Framework CLI commands (``faust -A metrobus_app settings``) and how every command reports errors."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import click
import faust
from aiokafka.errors import KafkaError
from faust.cli import AppCommand

from metrobus_app.config.settings import Settings
from metrobus_app.errors import MetrobusError

CommandFunction = Callable[..., Awaitable[Any]]


def one_line_errors(fun: CommandFunction) -> CommandFunction:
    """Turn a command's expected failures into one line on stderr and a non-zero exit, not a traceback."""

    @functools.wraps(fun)
    async def run(self: AppCommand, *args: Any, **kwargs: Any) -> Any:
        try:
            return await fun(self, *args, **kwargs)
        except click.ClickException as exc:
            exc.show()
            raise SystemExit(exc.exit_code) from None
        except (MetrobusError, OSError) as exc:
            click.echo(f"Error: {exc}", err=True)
        except KafkaError as exc:
            broker = self.app.settings.broker  # type: ignore[attr-defined]
            click.echo(f"Error: cannot talk to the broker at {broker} ({type(exc).__name__}: {exc})", err=True)
        raise SystemExit(1)

    return run


def register_commands(app: faust.App) -> None:
    """Add the framework's commands to ``app``."""

    @app.command()
    async def settings(self: AppCommand) -> None:
        """Show every METROBUS_* setting: its value here, and what it means."""
        current: Settings = self.app.settings  # type: ignore[attr-defined]
        for env, value, default, doc in current.describe():
            click.echo(f"{env}={value}    # {doc} (default: {default})")
