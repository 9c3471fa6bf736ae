"""Route rules as data: which route a raw record gets, from conditions on its fields.

A rule set is a plain document (TOML in a file, JSON in the bus and the web view)::

    default = ["AddEmail", "WhiteList", "Log"]      # when no rule matches

    [[rules]]                                       # first match wins, in this order
    name = "audit"
    route = ["AddEmail", "Log"]
    match = { message_type_code = "AUDIT" }

``match`` maps a field of the record (``a.b`` reaches into nested objects) to a condition;
every field's condition must hold. A condition is a value (equals) or a table of:

- ``equals = V``: the field is V (a string, number or boolean; ``1`` never equals ``true``);
- ``in = [V, ...]``: the field is one of them;
- ``exists = true | false``: the field is there with a non-null value, or it is not;
- ``min = N``, ``max = N``: the field is a number (not a boolean) and ``N <= field`` /
  ``field <= N``; both together give a range.

A route lists steps in travel order; a step is a stop name or a fan-out ``"Log+Archive"``
(also ``["Log", "Archive"]``): the message is copied to each and each copy goes on along
the rest of the route. This module knows no stop names: the caller passes the stops a
route may name. Nothing here runs per message except ``RuleSet.route_for``, which only
calls the functions compiled once per rule set.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metrobus_app.errors import MetrobusError
from metrobus_app.wire.steps import Step, parse_step, step_text, stops_of

CONDITIONS = ("equals", "in", "exists", "min", "max")
RULE_KEYS = ("name", "match", "route", "description", "deadline_s")
META_KEYS = ("revision", "updated_at", "updated_by")
DEFAULT = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_MISSING = object()
_SHOWN = {"equals": "=", "in": "in", "min": ">=", "max": "<="}

Test = Callable[[Mapping[str, Any]], bool]


class RuleError(MetrobusError):
    """A rule set, a rule or an edit of them is not valid; the message says exactly why."""


class RuleExists(RuleError):
    """An add named a rule that is there already."""


class RuleNotFound(RuleError):
    """A change named a rule that is not there."""


@dataclass(frozen=True)
class Rule:
    """One compiled rule: its name, its test of a record, and its route (travel order)."""

    name: str
    test: Test
    route: tuple[Step, ...]
    deadline_s: float | None = None  # the message must reach each stop within this many seconds


class RuleSet:
    """A validated rule set, compiled: ``route_for(record)`` is the per-record call."""

    def __init__(self, document: dict[str, Any], rules: tuple[Rule, ...], default: tuple[Step, ...]) -> None:
        self.document = document
        self.rules = rules
        self.default = default

    def route_for(self, record: Mapping[str, Any]) -> tuple[Step, ...]:
        """The route of the first rule that matches ``record``, or the default route."""
        rule = self.first_match(record)
        return self.default if rule is None else rule.route

    def first_match(self, record: Mapping[str, Any]) -> Rule | None:
        """The first rule that matches ``record``, or None (the default route then)."""
        for rule in self.rules:
            if rule.test(record):
                return rule
        return None

    def rule_for(self, record: Mapping[str, Any]) -> str:
        """The name of the rule that matches ``record`` first, or ``"default"``."""
        for rule in self.rules:
            if rule.test(record):
                return rule.name
        return DEFAULT


def compile_rules(document: Any, known_stops: Collection[str] | None = None) -> RuleSet:
    """Validate ``document`` and compile it; raises RuleError saying what is wrong and where.

    With ``known_stops`` every stop a route names must be one of them.
    """
    canonical = normalize(document, known_stops)
    rules = tuple(
        Rule(
            rule["name"],
            _compile_match(rule["match"], f"rule {rule['name']!r}"),
            _steps(rule["route"]),
            rule.get("deadline_s"),
        )
        for rule in canonical["rules"]
    )
    return RuleSet(canonical, rules, _steps(canonical[DEFAULT]))


def _steps(texts: list[str]) -> tuple[Step, ...]:
    return tuple(parse_step(text) for text in texts)


def normalize(document: Any, known_stops: Collection[str] | None = None) -> dict[str, Any]:
    """The canonical form of a rule set (steps written ``"A+B"``), checked; raises RuleError."""
    if not isinstance(document, Mapping):
        raise RuleError(f"a rule set is an object with 'default' and 'rules', got {_kind(document)}")
    unknown = [key for key in document if key not in (DEFAULT, "rules", *META_KEYS)]
    if unknown:
        raise RuleError(f"unknown key {unknown[0]!r} in the rule set (it has 'default' and 'rules')")
    if DEFAULT not in document:
        raise RuleError("the rule set has no default route ('default = [\"Stop\", ...]')")
    default = _route(document[DEFAULT], "the default route", known_stops)
    rules = document.get("rules", [])
    if not isinstance(rules, list):
        raise RuleError(f"'rules' is a list of rules, got {_kind(rules)}")
    canonical = [normalize_rule(rule, known_stops, where=f"rule #{n}") for n, rule in enumerate(rules, 1)]
    seen: set[str] = set()
    for rule in canonical:
        if rule["name"] in seen:
            raise RuleError(f"two rules are named {rule['name']!r}")
        seen.add(rule["name"])
    return {DEFAULT: default, "rules": canonical}


def normalize_rule(rule: Any, known_stops: Collection[str] | None = None, *, where: str = "the rule") -> dict[str, Any]:
    """The canonical form of one rule ``{name, match, route[, description]}``, checked; raises RuleError."""
    if not isinstance(rule, Mapping):
        raise RuleError(f"{where}: a rule is an object with 'name', 'match' and 'route', got {_kind(rule)}")
    name = rule.get("name")
    check_name(name, where)
    where = f"rule {name!r}"
    unknown = [key for key in rule if key not in RULE_KEYS]
    if unknown:
        raise RuleError(f"{where}: unknown key {unknown[0]!r} (a rule has {', '.join(RULE_KEYS)})")
    if "match" not in rule:
        raise RuleError(f"{where}: no 'match' (a rule that matches everything is the default route)")
    _compile_match(rule["match"], where)
    if "route" not in rule:
        raise RuleError(f"{where}: no 'route'")
    canonical = {"name": name, "match": dict(rule["match"]), "route": _route(rule["route"], where, known_stops)}
    if "description" in rule:
        if not isinstance(rule["description"], str):
            raise RuleError(f"{where}: 'description' is text, got {_kind(rule['description'])}")
        canonical["description"] = rule["description"]
    if "deadline_s" in rule:
        deadline = rule["deadline_s"]
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not 0 < deadline < math.inf:
            raise RuleError(f"{where}: 'deadline_s' is a number of seconds above 0, got {deadline!r}")
        canonical["deadline_s"] = deadline
    return canonical


def check_name(name: Any, where: str = "the rule") -> str:
    """A rule name: letters, digits, ``_.-``, at most 100 characters; ``default`` is the default route's."""
    if not isinstance(name, str) or not name:
        raise RuleError(f"{where}: no 'name'")
    if not _NAME.fullmatch(name):
        raise RuleError(f"{where}: name {name!r} must be letters, digits, '_', '.', '-' (at most 100, first not '_.-')")
    if name == DEFAULT:
        raise RuleError(f"{where}: 'default' names the default route, not a rule")
    return name


def _route(route: Any, where: str, known_stops: Collection[str] | None) -> list[str]:
    if isinstance(route, str):
        raise RuleError(f'{where}: route is a list of steps, like ["AddEmail", "Log"], got the string {route!r}')
    if not isinstance(route, list | tuple):
        raise RuleError(f"{where}: route is a list of steps, got {_kind(route)}")
    if not route:
        raise RuleError(f"{where}: route is empty")
    steps: list[Step] = []
    for n, step in enumerate(route, 1):
        try:
            steps.append(parse_step(step))
        except ValueError as exc:
            raise RuleError(f"{where}: step {n} of the route: {exc}") from None
    if known_stops is not None:
        for name in stops_of(steps):
            if name not in known_stops:
                raise RuleError(f"{where}: route names unknown stop {name!r} (known: {', '.join(sorted(known_stops))})")
        check_types = getattr(known_stops, "route_problem", None)  # the bus's stops know their payload types
        problem = check_types(steps, where) if check_types is not None else None
        if problem:
            raise RuleError(problem)
    return [step_text(step) for step in steps]


# --- conditions -------------------------------------------------------------------------


def _compile_match(match: Any, where: str) -> Test:
    if not isinstance(match, Mapping):
        raise RuleError(f"{where}: match is a table of field = condition, got {_kind(match)}")
    if not match:
        raise RuleError(f"{where}: match is empty (a rule that matches everything is the default route)")
    tests = [_compile_field(field, condition, f"{where}: match.{field}") for field, condition in match.items()]
    if len(tests) == 1:
        return tests[0]

    def all_hold(record: Mapping[str, Any]) -> bool:
        return all(test(record) for test in tests)

    return all_hold


def _compile_field(field: str, condition: Any, where: str) -> Test:
    path = field.split(".")
    if not all(path):
        raise RuleError(f"{where}: a field is a name, or names joined by '.' for nested fields")
    if isinstance(condition, Mapping):
        if not condition:
            raise RuleError(f"{where}: no condition (use one of {', '.join(CONDITIONS)})")
        conditions = dict(condition)
    elif isinstance(condition, list | tuple):
        raise RuleError(f"{where}: a list is not a value; to match one of several use {{in = [...]}}")
    else:
        conditions = {"equals": condition}
    unknown = [key for key in conditions if key not in CONDITIONS]
    if unknown:
        raise RuleError(f"{where}: unknown condition {unknown[0]!r} (use {', '.join(CONDITIONS)})")
    explicit = isinstance(condition, Mapping)
    checks = [
        _compile_condition(kind, arg, f"{where}.{kind}" if explicit else where) for kind, arg in conditions.items()
    ]
    if conditions.get("exists") is False and len(conditions) > 1:
        raise RuleError(f"{where}: exists = false cannot hold together with other conditions")
    if "min" in conditions and "max" in conditions and conditions["min"] > conditions["max"]:
        raise RuleError(f"{where}: min {conditions['min']} is above max {conditions['max']}: nothing can match")
    get = _getter(path)
    if len(checks) == 1:
        [check] = checks
        return lambda record: check(get(record))
    return lambda record: _all(checks, get(record))


def _all(checks: list[Callable[[Any], bool]], value: Any) -> bool:
    return all(check(value) for check in checks)


def _getter(path: list[str]) -> Callable[[Mapping[str, Any]], Any]:
    if len(path) == 1:
        [key] = path
        return lambda record: record.get(key, _MISSING)

    def get(record: Mapping[str, Any]) -> Any:
        value: Any = record
        for key in path:
            if not isinstance(value, dict):
                return _MISSING
            value = value.get(key, _MISSING)
        return value

    return get


def _compile_condition(kind: str, arg: Any, where: str) -> Callable[[Any], bool]:
    if kind == "equals":
        _check_value(arg, where)
        if isinstance(arg, bool):
            return lambda value: value is arg
        return lambda value: value == arg and not isinstance(value, bool)
    if kind == "in":
        if not isinstance(arg, list | tuple) or not arg:
            raise RuleError(f"{where}: a non-empty list of values, got {_kind(arg) if arg != [] else 'an empty list'}")
        for value in arg:
            _check_value(value, where)
        flags = frozenset(value for value in arg if isinstance(value, bool))
        others = frozenset(value for value in arg if not isinstance(value, bool))
        return lambda value: (value in flags) if isinstance(value, bool) else _hashable_in(value, others)
    if kind == "exists":
        if not isinstance(arg, bool):
            raise RuleError(f"{where}: true or false, got {_kind(arg)}")
        if arg:
            return lambda value: value is not _MISSING and value is not None
        return lambda value: value is _MISSING or value is None
    # min / max
    if isinstance(arg, bool) or not isinstance(arg, int | float) or (isinstance(arg, float) and not math.isfinite(arg)):
        raise RuleError(f"{where}: a number, got {_kind(arg)}")
    if kind == "min":
        return lambda value: _is_number(value) and value >= arg
    return lambda value: _is_number(value) and value <= arg


def _hashable_in(value: Any, values: frozenset[Any]) -> bool:
    try:
        return value in values
    except TypeError:  # a list or an object: never one of the values
        return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise RuleError(f"{where}: {value} is not a value a record can hold")
    if not isinstance(value, str | int | float | bool):
        hint = " (to match a missing field use exists = false)" if value is None else ""
        raise RuleError(f"{where}: a value is a string, number or boolean, got {_kind(value)}{hint}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


# --- files and edits --------------------------------------------------------------------


def load_file(path: Path) -> dict[str, Any]:
    """A rule set document from a TOML file (``.json``: JSON); raises RuleError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(f"cannot read rules file {path}: {exc.strerror or exc}") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise RuleError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    return document


def put_rule(
    document: dict[str, Any],
    rule: dict[str, Any],
    *,
    create: bool | None = None,
    position: int | None = None,
    before: str | None = None,
    after: str | None = None,
) -> dict[str, Any]:
    """A copy of ``document`` with ``rule`` added or replacing the rule of its name.

    ``create=True`` refuses a name already there, ``create=False`` a name not there. A
    replaced rule keeps its place and a new one goes last, unless ``position`` (1 is
    first), ``before`` or ``after`` (a rule's name) says where.
    """
    if sum(x is not None for x in (position, before, after)) > 1:
        raise RuleError("say where with one of position, before, after")
    name = rule.get("name") if isinstance(rule, Mapping) else None
    rules = list(document.get("rules", []))
    names = [r.get("name") for r in rules]
    exists = name in names
    if create is True and exists:
        raise RuleExists(f"a rule named {name!r} exists already (replace it, or remove it first)")
    if create is False and not exists:
        raise RuleNotFound(f"no rule named {name!r}")
    at = names.index(name) if exists else len(rules)
    if exists:
        del rules[at]
        names.remove(name)
    if position is not None:
        if not 1 <= position <= len(rules) + 1:
            raise RuleError(f"position {position} is outside 1..{len(rules) + 1}")
        at = position - 1
    elif before is not None or after is not None:
        other = before if before is not None else after
        if other not in names:
            raise RuleError(f"no rule named {other!r} to put {name!r} {'before' if before is not None else 'after'}")
        at = names.index(other) + (after is not None)
    rules.insert(at, rule)
    return {**document, "rules": rules}


def remove_rule(document: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of ``document`` without the rule ``name``; RuleError when there is none."""
    if name == DEFAULT:
        raise RuleError("the default route cannot be removed, only replaced")
    rules = list(document.get("rules", []))
    kept = [rule for rule in rules if rule.get("name") != name]
    if len(kept) == len(rules):
        raise RuleNotFound(f"no rule named {name!r}")
    return {**document, "rules": kept}


def set_default(document: dict[str, Any], route: Any) -> dict[str, Any]:
    """A copy of ``document`` with another default route."""
    return {**document, DEFAULT: route}


def describe(rule: Mapping[str, Any]) -> str:
    """A rule in one line: ``message_type_code = "AUDIT" -> AddEmail, Log``."""
    conditions = []
    for field, condition in rule["match"].items():
        for kind, arg in condition.items() if isinstance(condition, Mapping) else [("equals", condition)]:
            if kind == "exists":
                conditions.append(f"{field} {'exists' if arg else 'is missing'}")
            else:
                conditions.append(f"{field} {_SHOWN[kind]} {json.dumps(arg)}")
    return f"{' and '.join(conditions)} -> {', '.join(rule['route'])}"
