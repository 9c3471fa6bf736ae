"""The ``routes`` command: list and change the bus's route rules from a shell.

::

    faust -A metrobus_app routes list [--json]
    faust -A metrobus_app routes load [FILE]            # the whole rule set (TOML, or .json); no FILE: the rules file
    faust -A metrobus_app routes set NAME --when message_type_code=AUDIT --route AddEmail,Log [--before NAME]
    faust -A metrobus_app routes remove NAME
    faust -A metrobus_app routes default AddEmail,WhiteList,Log
    faust -A metrobus_app routes reset                  # forget the stored rules: back to the rules file
    faust -A metrobus_app routes match '{"message_type_code": "AUDIT"}'
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from faust.cli import AppCommand, argument, option

from metrobus_app.routing.language import DEFAULT, RuleError, compile_rules, describe, load_file
from metrobus_app.routing.rule_set import RuleEditor, read_stored
from metrobus_app.wire.steps import step_text

if TYPE_CHECKING:
    import faust

    from metrobus_app.routing.rule_set import RouteRules

ACTIONS = ("list", "load", "set", "remove", "default", "reset", "match")


def parse_route_text(texts: tuple[str, ...] | list[str]) -> list[str]:
    """Steps from the command line: ``AddEmail,Log+Archive`` (or several words) -> ``["AddEmail", "Log+Archive"]``."""
    return [step.strip() for text in texts for step in text.split(",") if step.strip()]


def parse_when(conditions: tuple[str, ...]) -> dict[str, Any]:
    """``--when FIELD=VALUE`` options as a match: the value as JSON when it is a JSON scalar, else as text."""
    match: dict[str, Any] = {}
    for condition in conditions:
        field, sep, text = condition.partition("=")
        if not sep or not field.strip():
            raise click.UsageError(f"--when takes FIELD=VALUE, got {condition!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        match[field.strip()] = value if isinstance(value, str | int | float | bool) else text
    return match


def register_routes_command(app: faust.App, rules: RouteRules) -> None:
    """Add ``routes`` to ``app``'s commands, working on ``rules``."""

    @app.command(
        argument("action", type=click.Choice(ACTIONS)),
        argument("args", nargs=-1),
        option("--route", "route_text", help="set: the steps in travel order, 'A,B+C,D' (B+C: a fan-out)."),
        option("--when", multiple=True, help="set: FIELD=VALUE, the field equals the value; repeat for more."),
        option("--match", "match_json", help='set: the whole match as JSON, e.g. \'{"amount": {"min": 100}}\'.'),
        option("--description", help="set: what the rule is for."),
        option(
            "--deadline-s",
            type=click.FloatRange(min=0, min_open=True),
            help="set: the message must reach each stop within this many seconds, or it expires.",
        ),
        option("--position", type=click.IntRange(min=1), help="set: put the rule at this place (1 is first)."),
        option("--before", help="set: put the rule before this one."),
        option("--after", help="set: put the rule after this one."),
        option("--json", "as_json", is_flag=True, help="list: print the rule set as JSON."),
    )
    async def routes(
        self: AppCommand,
        action: str,
        args: tuple[str, ...],
        route_text: str | None,
        when: tuple[str, ...],
        match_json: str | None,
        description: str | None,
        deadline_s: float | None,
        position: int | None,
        before: str | None,
        after: str | None,
        as_json: bool,
    ) -> None:
        """Route rules: list, load [FILE], set NAME, remove NAME, default STEPS, reset, match RECORD."""
        settings = self.app.settings  # type: ignore[attr-defined]
        editor = RuleEditor(rules, lambda: read_stored(settings, rules.cache.changelog), "cli")
        if action == "list":
            _no_more(action, args)
            document, source, revision = await editor.current()
            click.echo(json.dumps(document, indent=2) if as_json else listing(document, source, revision, rules.file))
        elif action == "load":
            if len(args) > 1:
                raise click.UsageError("load takes one FILE (or none: the rules file)")
            path = Path(args[0]) if args else rules.file
            revision = await editor.load(load_file(path))
            click.echo(f"loaded {path}: revision {revision}; every worker applies it within seconds")
        elif action == "set":
            name = _one(action, args, "NAME")
            document, *_ = await editor.current()
            old = next((rule for rule in document["rules"] if rule["name"] == name), None)
            rule = dict(old or {"name": name})
            match = None if match_json is None else _json_object(match_json, "--match")
            if when:
                match = {**(match or {}), **parse_when(when)}
            if match is not None:
                rule["match"] = match
            if route_text is not None:
                rule["route"] = parse_route_text([route_text])
            if description is not None:
                rule["description"] = description
            if deadline_s is not None:
                rule["deadline_s"] = deadline_s
            revision = await editor.put(rule, position=position, before=before, after=after)
            click.echo(f"rule {name!r} {'replaced' if old else 'added'}: revision {revision}")
        elif action == "remove":
            name = _one(action, args, "NAME")
            revision = await editor.remove(name)
            click.echo(f"rule {name!r} removed: revision {revision}")
        elif action == "default":
            steps = parse_route_text(list(args) or [route_text or ""])
            revision = await editor.set_default(steps)
            click.echo(f"default route {', '.join(steps)}: revision {revision}")
        elif action == "reset":
            _no_more(action, args)
            await editor.reset()
            click.echo(f"stored route rules forgotten: every worker routes by {rules.file} again")
        else:  # match
            record = _json_object(_one(action, args, "RECORD"), "RECORD")
            document, *_ = await editor.current()
            compiled = compile_rules(document, rules.bus.known_stops)
            route = ", ".join(step_text(step) for step in compiled.route_for(record))
            click.echo(f"{compiled.rule_for(record)} -> {route}")


def listing(document: dict[str, Any], source: str, revision: int, file: Path) -> str:
    """The rule set as ``routes list`` prints it."""
    if source == "file":
        lines = [f"route rules from {file} (none stored in the bus):"]
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(document.get("updated_at", 0)))
        by = document.get("updated_by", "?")
        lines = [f"route rules stored in the bus, revision {revision} (by {by}, {when} UTC):"]
    width = max([len(DEFAULT), *(len(rule["name"]) for rule in document["rules"])])
    for n, rule in enumerate(document["rules"], 1):
        lines.append(f"{n:3}. {rule['name']:{width}}  {describe(rule)}")
    lines.append(f"     {DEFAULT:{width}}  -> {', '.join(document[DEFAULT])}")
    return "\n".join(lines)


def _one(action: str, args: tuple[str, ...], what: str) -> str:
    if len(args) != 1:
        raise click.UsageError(f"{action} takes one {what}")
    return args[0]


def _no_more(action: str, args: tuple[str, ...]) -> None:
    if args:
        raise click.UsageError(f"{action} takes no arguments, got {' '.join(args)}")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RuleError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RuleError(f'{what} is a JSON object, like \'{{"message_type_code": "AUDIT"}}\'')
    return value
