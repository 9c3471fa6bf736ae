"""The ``reconcile`` and ``deadletters list|replay`` commands (see observe/reconcile.py, observe/dead_letters.py)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click
import faust
from faust.cli import AppCommand, argument, option

from metrobus_app.config.settings import Settings
from metrobus_app.observe.dead_letters import choose, dead_letters, plan_replay, replay, summary
from metrobus_app.observe.reconcile import reconcile_topics
from metrobus_app.observe.topic_audit import audit_topics


def register_accounting_commands(app: faust.App) -> None:
    """Add ``reconcile`` and ``deadletters`` to ``app``."""

    @app.command(
        option("--wait", type=click.FloatRange(min=0), default=0, help="Seconds to wait for the bus to balance."),
        option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        option(
            "--topics",
            default=None,
            help="Also audit these topics (comma-separated; 'stops': every stop's) as a read_committed reader: "
            "duplicates, order per key, open transactions.",
        ),
    )
    async def reconcile(self: AppCommand, wait: float, as_json: bool, topics: str | None) -> None:
        """Account for every message pushed: pushed = delivered + dropped + dead-lettered (+ duplicates).

        Reads the source topic, the fates topic and the replay ledger; exits 1 while a pushed
        message has no fate yet, or (``--topics``) an audited topic shows a duplicate, a key out
        of order or an open transaction.
        """
        settings: Settings = self.app.settings  # type: ignore[attr-defined]
        audited = _audited_topics(self.app, topics)
        deadline = time.monotonic() + wait
        while True:
            result = await reconcile_topics(settings)
            audit = await audit_topics(settings, audited) if audited and result.balanced else None
            done = result.balanced and (audit is None or audit.clean)
            if done or time.monotonic() >= deadline:
                break
            await asyncio.sleep(1.0)
        if audited and audit is None:
            audit = await audit_topics(settings, audited)
        if as_json:
            click.echo(json.dumps({**result.as_dict(), **({"topics": audit.as_dict()} if audit else {})}, indent=1))
        else:
            for line in result.lines() + (audit.lines() if audit else []):
                click.echo(line)
        if not result.balanced or (audit is not None and not audit.clean):
            raise SystemExit(1)

    @app.command(
        argument("action", type=click.Choice(["list", "replay"])),
        option("--stop", default=None, help="Only letters of this stop (busdriver: the source records)."),
        option("--error", default=None, help="Only letters of this error type, e.g. KeyError."),
        option("--ids", default=None, help="Only these message ids (comma-separated)."),
        option("--all", "include_replayed", is_flag=True, help="list: also letters already replayed."),
        option("--show", is_flag=True, help="list: every letter, not only the counts."),
        option("--dry-run", is_flag=True, help="replay: say what would be sent, send nothing."),
    )
    async def deadletters(
        self: AppCommand,
        action: str,
        stop: str | None,
        error: str | None,
        ids: str | None,
        include_replayed: bool,
        show: bool,
        dry_run: bool,
    ) -> None:
        """List dead letters (stop, error, count) or replay chosen ones to the stop that failed."""
        settings: Settings = self.app.settings  # type: ignore[attr-defined]
        wanted = [i.strip() for i in (ids or "").split(",") if i.strip()]
        letters = choose(
            await dead_letters(settings),
            stop=stop,
            error=error,
            ids=wanted,
            include_replayed=include_replayed and action == "list",
        )
        if action == "list":
            _list(letters, show)
            return
        report = plan_replay(letters, settings.max_replays)
        if report.not_replayable:
            click.echo(f"not replayable: {len(report.not_replayable)} (the value is not a message a stop can take)")
        if report.over_limit:
            click.echo(
                f"not replayed: {len(report.over_limit)} already replayed "
                f"METROBUS_MAX_REPLAYS={settings.max_replays} times"
            )
        targets = sorted({str(letter.body.get("topic")) for letter in report.replayed})
        if dry_run:
            click.echo(f"would replay {len(report.replayed)} messages to {', '.join(targets) or 'nothing'}")
            return
        await replay(settings, report.replayed)
        click.echo(f"replayed {len(report.replayed)} messages to {', '.join(targets) or 'nothing'}")


def _list(letters: list, show: bool) -> None:
    if not letters:
        click.echo("no dead letters")
        return
    rows = summary(letters)
    width = max(len(row[0]) for row in rows)
    err_width = max(len(row[1]) for row in rows)
    click.echo(f"{'stop':<{width}}  {'error':<{err_width}}  {'count':>6}  {'replayable':>10}  example")
    for stop, error, count, replayable, message in rows:
        click.echo(f"{stop:<{width}}  {error:<{err_width}}  {count:>6}  {replayable:>10}  {message}")
    if show:
        for letter in letters:
            body = letter.body
            mark = " (replayed)" if letter.replayed else ""
            click.echo(
                f"{letter.position}  id={body.get('id')}  {body.get('stop')}  {body.get('error')}: "
                f"{str(body.get('message', ''))[:200]}  replays={body.get('replays', 0)}{mark}"
            )


def _audited_topics(app: Any, topics: str | None) -> list[str]:
    """``--topics``: the names given, ``stops`` standing for every stop topic this app knows."""
    names: list[str] = []
    for name in (part.strip() for part in (topics or "").split(",")):
        if name == "stops":
            names.extend(sorted(app.bus.known_stops))
        elif name:
            names.append(name)
    return list(dict.fromkeys(names))
