"""Routes beyond a plain stack: fan-out steps, and stops that change the route ahead.

Wire format v1 stays as it is: ``header.route`` is a stack of plain stop names, so a 0.0.x
stop (``route.pop()`` -> topic) works anywhere in a route. What v1 cannot say lives in
header fields of our own, which a 0.0.x stop keeps without knowing them:

- ``fanout``: the fan-out steps still ahead, ``{"<index>": ["Log", "Archive"]}``. The index is
  the step's position in ``header.route`` counted from the bottom of the stack (0 is the last
  stop of the journey), so it does not move when stops are popped off or pushed on top. The
  route itself holds the step's first recipient, so a 0.0.x stop that pops a fan-out step
  sends the message to that first recipient; when that is one of our stops it sends the
  other copies itself before it runs (``late_copies``).
- ``original_fanout``: ``fanout`` as the busdriver stamped it (beside ``original_route``).
- ``copy``: the copy id of a fan-out copy: ``"1"``, ``"2"``, ... in recipient order, and
  ``"2.1"`` for the first copy of a fan-out made by copy ``"2"``. No ``copy`` field: the
  message has not been copied. Message id plus copy id names one copy.
- ``route_edits``: every change a stop made to the route ahead, in order:
  ``{"stop", "edit": "detour" | "skip" | "replace", "steps", "at"}`` (``replace`` also says
  what ``was`` ahead).

A step in travel order is a stop name or a fan-out: a tuple of at least two stop names
(written ``"Log+Archive"`` or ``["Log", "Archive"]``: Kafka topic names cannot hold ``+``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .envelope import HISTORICAL_ROUTE, HOPS, ROUTE, Envelope
from .errors import UnknownStop

if TYPE_CHECKING:
    from .bus import Bus

log = logging.getLogger("metrobus")

FANOUT = "fanout"
ORIGINAL_FANOUT = "original_fanout"
COPY = "copy"
ROUTE_EDITS = "route_edits"

Step = str | tuple[str, ...]


def parse_step(step: Any) -> Step:
    """A step as given (``"A"``, ``"A+B"``, ``["A", "B"]``) as a stop name or a tuple of stop names."""
    if isinstance(step, str):
        names = step.split("+") if "+" in step else None
        if names is None:
            if not step.strip() or step != step.strip():
                raise ValueError(f"a stop name is a non-empty name without spaces around it, got {step!r}")
            return step
    elif isinstance(step, list | tuple) and all(isinstance(name, str) for name in step):
        names = list(step)
        if len(names) == 1:
            return parse_step(names[0])
    else:
        raise ValueError(f"a route step is a stop name, 'A+B' or a list of stop names, got {step!r}")
    if len(names) < 2 or any(not name.strip() or name != name.strip() or "+" in name for name in names):
        raise ValueError(f"a fan-out step names two or more stops, like 'Log+Archive'; got {step!r}")
    if len(set(names)) < len(names):
        raise ValueError(f"a fan-out step names a stop twice: {step!r}")
    return tuple(names)


def parse_steps(steps: Any) -> tuple[Step, ...]:
    """A route in travel order, each step parsed; refuses a string or an empty route."""
    if isinstance(steps, str | bytes) or not isinstance(steps, Sequence) or not steps:
        raise ValueError(f"a route is a non-empty list of steps, got {steps!r}")
    return tuple(parse_step(step) for step in steps)


def step_text(step: Step) -> str:
    """How a step is written in rules and logs: ``"Log"`` or ``"Log+Archive"``."""
    return step if isinstance(step, str) else "+".join(step)


def stops_of(steps: Iterable[Step]) -> list[str]:
    """Every stop the steps name."""
    return [name for step in steps for name in ((step,) if isinstance(step, str) else step)]


def stamp(payload: Any, steps: Sequence[Any], **header: Any) -> Envelope:
    """``Envelope.stamp`` for routes that may hold fan-out steps (see the module docstring)."""
    if isinstance(steps, str) or not steps:
        return Envelope.stamp(payload, steps, **header)  # its error message
    stops, fanout = _planned(steps)
    envelope = Envelope.stamp(payload, stops, **header)
    if fanout:
        envelope.header[FANOUT] = {index: list(names) for index, names in fanout.items()}
        envelope.header[ORIGINAL_FANOUT] = {index: list(names) for index, names in fanout.items()}
    return envelope


_PLANS: dict[tuple[Any, ...], tuple[list[str], dict[str, tuple[str, ...]]]] = {}
_MAX_PLANS = 1024


def _planned(steps: Sequence[Any]) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """The route's stops in travel order (a fan-out step's first recipient) and its fan-out steps by index.

    A busdriver's rules hand out the same few routes again and again: a route that cannot
    change (a tuple of names and tuples of names, as rules give it, or a list of names) is
    parsed once, not for every record.
    """
    if steps.__class__ is tuple:
        key: tuple[Any, ...] | None = steps  # type: ignore[assignment]
        try:
            plan = _PLANS.get(key)
        except TypeError:  # a list inside: it may change, so it is not kept
            key = plan = None
    else:
        key = tuple(steps) if all(isinstance(step, str) for step in steps) else None
        plan = _PLANS.get(key) if key is not None else None
    if plan is None:
        parsed = parse_steps(steps)
        last = len(parsed) - 1
        fanout = {str(last - i): step for i, step in enumerate(parsed) if isinstance(step, tuple)}
        plan = ([_first(step) for step in parsed], fanout)
        if key is not None:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


def _first(step: Step) -> str:
    return step if isinstance(step, str) else step[0]


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


async def send_late_copies(bus: Bus, stop: str, key: bytes | None, envelope: Envelope) -> None:
    """Send the copies a 0.0.x stop did not make (see ``late_copies``); called on arrival, before the stop runs."""
    for copy in late_copies(envelope, stop):
        to = copy.header[HISTORICAL_ROUTE][-1]
        if to in bus.known_stops:
            await bus.sender(to, key, copy.to_bytes())
        else:
            error = UnknownStop(f"fan-out names unknown stop {to!r} (known: {', '.join(sorted(bus.known_stops))})")
            await bus.dead_letter(stop, key, copy.to_bytes(), error, copy)


class Route:
    """The route ahead of one message, as a stop declared with ``route=True`` gets it.

    ``route.ahead`` lists the steps still to come in travel order; ``detour``, ``skip`` and
    ``replace`` change them. Every change is recorded in ``header.route_edits``; stops the
    message is then sent to are appended to ``historical_route`` as always. A step naming a
    stop the bus does not know raises ``UnknownStop`` at once (the message is dead-lettered
    at this stop, with the name).
    """

    __slots__ = ("_envelope", "_known", "_stop")

    def __init__(self, envelope: Envelope, stop: str, known_stops: Callable[[], set[str]]) -> None:
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
        self._envelope.route.append(_first(step))
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

    __slots__ = ("bus", "fn", "stop")

    def __init__(self, fn: Callable[[Any, Route], Any], stop: str, bus: Bus) -> None:
        self.fn, self.stop, self.bus = fn, stop, bus

    def __call__(self, envelope: Envelope) -> Any:
        return self.fn(envelope.payload, Route(envelope, self.stop, lambda: self.bus.known_stops))
