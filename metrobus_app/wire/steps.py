"""Route steps on the wire: a stack of stop names, and the header fields for what v1 cannot say.

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

from collections.abc import Iterable, Sequence
from typing import Any

from metrobus_app.wire.envelope import Envelope

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
        key: tuple[Any, ...] | None = steps
        try:
            plan = _PLANS.get(steps)
        except TypeError:  # a list inside: it may change, so it is not kept
            key = plan = None
    else:
        key = tuple(steps) if all(isinstance(step, str) for step in steps) else None
        plan = _PLANS.get(key) if key is not None else None
    if plan is None:
        parsed = parse_steps(steps)
        last = len(parsed) - 1
        fanout = {str(last - i): step for i, step in enumerate(parsed) if isinstance(step, tuple)}
        plan = ([first_stop(step) for step in parsed], fanout)
        if key is not None:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


def first_stop(step: Step) -> str:
    """The stop a step sends to first: itself, or a fan-out step's first recipient."""
    return step if isinstance(step, str) else step[0]
