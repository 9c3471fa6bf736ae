"""Typed payloads: a stop's annotation (a pydantic model, a ``TypedDict`` or a dataclass) validates its payload.

``typed(fn)`` wraps a stop whose first parameter is annotated with such a type: the payload
is validated and converted before the stop runs (a payload that does not validate raises
``InvalidPayload`` naming each field), and a returned model or dataclass goes back to JSON.
An untyped stop (``payload: dict``, or no annotation) is not wrapped: it costs nothing.
``route_problem`` tells, from the types alone, whether each stop of a route gets the fields
its input needs from the stop before it (or from the record, for the first).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from typing_extensions import is_typeddict

from metrobus_app.errors import InvalidPayload
from metrobus_app.wire.steps import Step, parse_steps


@dataclass(frozen=True)
class PayloadType:
    """One payload type: a pydantic model, a TypedDict or a dataclass, and its validator."""

    kind: type
    adapter: TypeAdapter[Any]

    @property
    def name(self) -> str:
        return self.kind.__name__

    def fields(self) -> set[str]:
        """The fields the type declares (a value of it surely has them, as far as the type says)."""
        return set(self.json_schema().get("properties", {}))

    def required(self) -> set[str]:
        """The fields a payload must have to validate."""
        return set(self.json_schema().get("required", []))

    @functools.cache  # noqa: B019 - one per type, for the life of the process
    def json_schema(self) -> dict[str, Any]:
        return self.adapter.json_schema()

    def load(self, payload: Any, stop: str) -> Any:
        """The payload validated and converted; ``InvalidPayload`` naming each field that is not right."""
        try:
            return self.adapter.validate_python(payload)
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(part) for part in error["loc"]) or "(the payload)", "problem": error["msg"]}
                for error in exc.errors(include_url=False)
            ]
            raise InvalidPayload(stop, self.name, problems) from None


def payload_type(annotation: Any) -> PayloadType | None:
    """The ``PayloadType`` of an annotation, or None when it is not a model, a TypedDict or a dataclass."""
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or is_typeddict(annotation) or dataclasses.is_dataclass(annotation)
    ):
        return PayloadType(annotation, TypeAdapter(annotation))
    return None


@dataclass(frozen=True)
class StopTypes:
    """What a stop takes and gives, when its annotations say (None: untyped)."""

    input: PayloadType | None = None
    output: PayloadType | None = None


def stop_types(fn: Callable[..., Any]) -> StopTypes:
    """The payload types of a stop's first parameter and of its return annotation."""
    try:
        hints = typing.get_type_hints(fn)
        first = next(iter(inspect.signature(fn).parameters), None)
    except (NameError, TypeError, ValueError) as exc:  # e.g. a class defined inside a function
        log.warning(
            "the annotations of %s cannot be read (%s: %s): its payload is not validated", fn, type(exc).__name__, exc
        )
        return StopTypes()
    returned = hints.get("return")
    if typing.get_origin(returned) in (typing.Union, _UNION_TYPE):  # Contact | None: a stop may drop
        kinds = [arg for arg in typing.get_args(returned) if arg is not type(None)]
        returned = kinds[0] if len(kinds) == 1 else None
    return StopTypes(payload_type(hints.get(first)) if first else None, payload_type(returned))


_UNION_TYPE = type(int | None)
log = logging.getLogger("metrobus")


def typed(fn: Callable[..., Any], name: str, types: StopTypes) -> Callable[..., Any]:
    """``fn`` as the bus calls it: its payload validated and converted, a returned model or dataclass as JSON."""
    given = types.input
    if given is None:
        return fn
    load = given.load
    if inspect.iscoroutinefunction(fn):

        async def run_async(payload: Any, *more: Any) -> Any:
            return to_json(await fn(load(payload, name), *more))

        return run_async

    def run(payload: Any, *more: Any) -> Any:
        result = fn(load(payload, name), *more)
        return result if inspect.isawaitable(result) else to_json(result)

    return run


def to_json(value: Any) -> Any:
    """A returned model or dataclass as the JSON value it stands for; anything else as it is."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _adapter(type(value)).dump_python(value, mode="json")
    return value


@functools.cache
def _adapter(kind: type) -> TypeAdapter[Any]:
    """One TypeAdapter per returned dataclass type: building one costs far more than a dump."""
    return TypeAdapter(kind)


def route_problem(
    steps: Iterable[Step], types: Mapping[str, StopTypes], record: PayloadType | None, where: str
) -> str | None:
    """Why a route cannot work by its stops' types (a stop needs a field the one before does not give), or None.

    Only what the types tell is checked: after an untyped stop (or a record of no type)
    anything may come, and nothing is refused.
    """
    known: tuple[set[str], str] | None = (record.fields(), "the record does not have") if record else None
    for step in steps:
        names = (step,) if isinstance(step, str) else step
        after: tuple[set[str], str] | None = None
        for stop in names:
            stop_type = types.get(stop, StopTypes())
            needed = stop_type.input.required() if stop_type.input else set()
            if known is not None and (missing := sorted(needed - known[0])):
                field = missing[0]
                return f"{where}: {stop} needs '{field}', which {known[1]}"
            out = stop_type.output
            after = (out.fields(), f"{stop}'s output {out.name} does not have") if out else None
        known = after if len(names) == 1 else None  # after a fan-out each copy goes its own way
    return None


class KnownStops(frozenset[str]):
    """The stops a route may name, with what each takes and gives: rules checked against them check the types too.

    ``routing.language`` asks any ``known_stops`` it is given for ``route_problem`` (when it
    has one), so the rules file, the ``routes`` command and the web view refuse a route the
    types cannot carry, with the same message.
    """

    types: Mapping[str, StopTypes]
    record: PayloadType | None
    typed: bool  # whether any stop says what it takes or gives: else no route can be refused by types
    _judged: dict[tuple[Any, ...], str | None]

    def __new__(cls, names: Iterable[str], types: Mapping[str, StopTypes], record: PayloadType | None) -> KnownStops:
        known = super().__new__(cls, names)
        known.types, known.record = types, record
        known.typed = any(t.input is not None or t.output is not None for t in types.values())
        known._judged = {}
        return known

    def route_problem(self, steps: Iterable[Step], where: str) -> str | None:
        return route_problem(steps, self.types, self.record, where)

    def busdriver_problem(self, route: Any) -> str | None:
        """Why a route the busdriver returned cannot work by the stops' types, or None; each route judged once."""
        if not self.typed:
            return None
        try:
            key = tuple(route)
            hash(key)
        except TypeError:  # a list inside: judged every time
            return self.route_problem(parse_steps(route), "the busdriver's route")
        judged = self._judged
        if key not in judged:
            if len(judged) >= 1024:
                judged.clear()
            judged[key] = self.route_problem(parse_steps(route), "the busdriver's route")
        return judged[key]
