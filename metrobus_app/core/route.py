"""Fan-out copies, and the route ahead as a stop declared with ``route=True`` changes it.

How fan-out steps and route edits are written in the header: see ``wire.steps``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from metrobus_app.errors import UnknownStop
from metrobus_app.wire.envelope import HISTORICAL_ROUTE, HOPS, ROUTE, Envelope
from metrobus_app.wire.steps import COPY, FANOUT, ROUTE_EDITS, Step, first_stop, parse_steps, step_text, stops_of

log = logging.getLogger("metrobus")


def fan_out(envelope: Envelope) -> list[Envelope]:
    """The envelopes to send on: ``[envelope]``, or one copy per recipient when the next step is a fan-out.

    Each copy has the recipient as its next stop, its own copy id, and the fan-out step taken
    out of ``fanout``; the copies share the payload, so send them (``to_bytes``) before
    anything changes it. ``envelope`` itself is left as it was.
    """
    fanout = envelope.header.get(FANOUT)
    if not fanout:
        return [envelope]
    route = envelope.route
    index = str(len(route) - 1)
    recipients = fanout.get(index)
    if not recipients:
        return [envelope]
    rest = {k: v for k, v in fanout.items() if k != index}
    return [_copy(envelope, i, rest, route=[*route[:-1], stop]) for i, stop in enumerate(recipients, 1)]


def late_copies(envelope: Envelope, stop: str) -> list[Envelope]:
    """The copies ``stop`` must send for a fan-out step that a 0.0.x stop popped as a plain stop.

    A 0.0.x stop sent the message only to the step's first recipient, ``stop``; the other
    recipients get a copy each (addressed by ``historical_route[-1]``) and this one becomes
    copy 1. Entries of ``fanout`` that were popped further back (two 0.0.x stops in a row
    around a fan-out step) cannot be completed any more: they are dropped with a warning.
    Changes ``envelope`` (its ``fanout`` and ``copy``); ``[]`` when nothing was pending.
    """
    fanout = envelope.header.get(FANOUT)
    if not isinstance(fanout, dict):
        return []
    size = len(envelope.route)
    passed = [k for k in fanout if not (k.isdigit() and int(k) < size)]
    if not passed:
        return []
    history = envelope.header[HISTORICAL_ROUTE]
    popped = {index: fanout.pop(index) for index in passed}
    copies: list[Envelope] = []
    for index, recipients in popped.items():
        if index == str(size) and history and history[-1] == stop and recipients and recipients[0] == stop:
            others = recipients[1:]
            copies.extend(
                _copy(envelope, i, fanout, history=[*history[:-1], other]) for i, other in enumerate(others, 2)
            )
            envelope.header[COPY] = _copy_id(envelope, 1)
        else:
            log.warning(
                "message %s at %s: fan-out step %s was passed without copies (two 0.0.x stops in a row?)",
                envelope.id,
                stop,
                "+".join(map(str, recipients)),
            )
    if not fanout:
        del envelope.header[FANOUT]
    return copies


def _copy(
    envelope: Envelope,
    number: int,
    fanout: dict[str, Any],
    *,
    route: list[str] | None = None,
    history: list[str] | None = None,
) -> Envelope:
    header = dict(envelope.header)
    header[ROUTE] = list(envelope.route) if route is None else route
    header[HISTORICAL_ROUTE] = list(header[HISTORICAL_ROUTE]) if history is None else history
    if isinstance(header.get(HOPS), list):
        header[HOPS] = list(header[HOPS])
    if fanout:
        header[FANOUT] = dict(fanout)
    else:
        header.pop(FANOUT, None)
    header[COPY] = _copy_id(envelope, number)
    return Envelope(header, envelope.payload)


def _copy_id(envelope: Envelope, number: int) -> str:
    parent = envelope.header.get(COPY)
    return f"{parent}.{number}" if parent else str(number)


class Route:
    """The route ahead of one message, as a stop declared with ``route=True`` gets it.

    ``route.ahead`` lists the steps still to come in travel order; ``detour``, ``skip`` and
    ``replace`` change them. Every change is recorded in ``header.route_edits``; stops the
    message is then sent to are appended to ``historical_route`` as always. A step naming a
    stop the bus does not know raises ``UnknownStop`` at once (the message is dead-lettered
    at this stop, with the name).
    """

    __slots__ = ("_envelope", "_known", "_stop")

    def __init__(self, envelope: Envelope, stop: str, known_stops: Callable[[], AbstractSet[str]]) -> None:
        self._envelope = envelope
        self._stop = stop
        self._known = known_stops

    @property
    def ahead(self) -> list[Step]:
        """The steps still to come, next first; a fan-out step is a tuple of stop names."""
        route = self._envelope.route
        fanout = self._envelope.header.get(FANOUT) or {}
        return [tuple(fanout[str(i)]) if str(i) in fanout else route[i] for i in range(len(route) - 1, -1, -1)]

    @property
    def next(self) -> Step | None:
        """The next step, or None when this stop is the last."""
        ahead = self.ahead
        return ahead[0] if ahead else None

    def detour(self, *steps: Any) -> None:
        """Go through ``steps`` next, then on along the rest of the route (``detour("Review")``)."""
        parsed = self._checked(steps)
        for step in reversed(parsed):
            self._push(step)
        self._record("detour", parsed)

    def skip(self, count: int = 1) -> None:
        """Leave out the next ``count`` steps."""
        ahead = self.ahead
        if not 0 < count <= len(ahead):
            raise ValueError(f"cannot skip {count} steps: {len(ahead)} ahead")
        for _ in range(count):
            self._pop()
        self._record("skip", ahead[:count])

    def replace(self, *steps: Any) -> None:
        """Replace everything ahead with ``steps``; ``replace()`` with none ends the journey at this stop."""
        parsed = self._checked(steps) if steps else ()
        was = self.ahead
        while self._envelope.route:
            self._pop()
        for step in reversed(parsed):
            self._push(step)
        self._record("replace", parsed, was=[step_text(step) for step in was])

    def _checked(self, steps: Sequence[Any]) -> tuple[Step, ...]:
        parsed = parse_steps(steps)
        known = self._known()
        unknown = [name for name in stops_of(parsed) if name not in known]
        if unknown:
            raise UnknownStop(f"{self._stop} routes to unknown stop {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return parsed

    def _push(self, step: Step) -> None:
        header = self._envelope.header
        self._envelope.route.append(first_stop(step))
        if isinstance(step, tuple):
            header.setdefault(FANOUT, {})[str(len(self._envelope.route) - 1)] = list(step)

    def _pop(self) -> None:
        header = self._envelope.header
        self._envelope.route.pop()
        fanout = header.get(FANOUT)
        if fanout:
            fanout.pop(str(len(self._envelope.route)), None)
            if not fanout:
                del header[FANOUT]

    def _record(self, edit: str, steps: Sequence[Step], **more: Any) -> None:
        entry = {"stop": self._stop, "edit": edit, "steps": [step_text(step) for step in steps], **more}
        entry["at"] = round(time.time(), 6)
        edits = self._envelope.header.get(ROUTE_EDITS)
        if isinstance(edits, list):
            edits.append(entry)
        else:
            self._envelope.header[ROUTE_EDITS] = [entry]


class RouteStop:
    """A stop function of ``(payload, route)``: what ``bus.stop(name, route=True)`` runs."""

    __slots__ = ("fn", "known_stops", "stop")

    def __init__(self, fn: Callable[[Any, Route], Any], stop: str, known_stops: Callable[[], AbstractSet[str]]) -> None:
        self.fn, self.stop, self.known_stops = fn, stop, known_stops

    def __call__(self, envelope: Envelope) -> Any:
        return self.fn(envelope.payload, Route(envelope, self.stop, self.known_stops))
