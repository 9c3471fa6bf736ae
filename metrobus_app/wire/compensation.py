"""The undo stack on the envelope: what the stops done recorded to undo themselves, and the story of a failure.

A stop with a compensation (``core/recovery.py``) pushes ``{"stop", "log"}`` on ``header.compensate`` when it
completes; ``log`` is what the stop recorded with ``remember(value)`` (JSON), else None.
When a message fails for good, ``begin`` turns its route into the compensations of the
stops done, newest first, and keeps in ``header.compensating`` why and where it failed,
the route and stack it had then, and what was undone so far. ``story`` rebuilds the
envelope as it failed, for the dead letter (so ``deadletters replay`` sends it back to the
stop that failed, undo stack kept).
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

from metrobus_app.wire.envelope import (
    ATTEMPTS,
    COMPENSATE,
    COMPENSATING,
    HISTORICAL_ROUTE,
    RETRY,
    ROUTE,
    Envelope,
)
from metrobus_app.wire.steps import FANOUT

_log: contextvars.ContextVar[Any] = contextvars.ContextVar("metrobus_undo_log", default=None)


def remember(log: Any) -> None:
    """Keep ``log`` (a small JSON value) for this stop's compensation, should the message fail later."""
    _log.set(log)


def take_log() -> Any:
    """What the running stop remembered, and forget it."""
    log = _log.get()
    if log is not None:
        _log.set(None)
    return log


def push_undo(envelope: Envelope, stop: str, log: Any) -> None:
    """Record that ``stop`` is done and how it can be undone."""
    entry = {"stop": stop, "log": log}
    stack = envelope.header.get(COMPENSATE)
    if isinstance(stack, list):
        stack.append(entry)
    else:
        envelope.header[COMPENSATE] = [entry]


def undo_stops(envelope: Envelope) -> list[str]:
    """The stops to undo, newest first."""
    stack = envelope.header.get(COMPENSATE)
    return [entry["stop"] for entry in reversed(stack)] if isinstance(stack, list) else []


def begin(envelope: Envelope, stop: str, error: BaseException, *, fate: str) -> bool:
    """Send the message back through the compensations of the stops done; False when there are none.

    ``stop`` is where it failed (it is not undone: it did not complete); ``fate`` is how the
    message ends once undone (``compensated`` or ``expired``).
    """
    stack = envelope.header.get(COMPENSATE)
    if not isinstance(stack, list) or not stack:
        return False
    header = envelope.header
    header[COMPENSATING] = {
        "stop": stop,
        "error": type(error).__name__,
        "message": str(error),
        "fate": fate,
        "at": round(time.time(), 6),
        "route": list(envelope.route),
        "stack": [dict(entry) for entry in stack],
        "history": len(header.get(HISTORICAL_ROUTE) or []),
        "undone": [],
    }
    for name in (FANOUT, ATTEMPTS, RETRY):
        header.pop(name, None)
    header[ROUTE] = [entry["stop"] for entry in stack]  # the stack's newest entry is the next stop
    return True


def undone(envelope: Envelope, stop: str) -> None:
    """``stop`` has undone its part: off the stack, onto the story."""
    header = envelope.header
    stack = header[COMPENSATE]
    if stack and stack[-1].get("stop") == stop:
        stack.pop()
    header[COMPENSATING]["undone"].append(stop)
    header.pop(ATTEMPTS, None)
    header.pop(RETRY, None)


def entry_of(envelope: Envelope, stop: str) -> dict[str, Any] | None:
    """The undo entry ``stop`` is to run now (the top of the stack), if it is ``stop``'s."""
    stack = envelope.header.get(COMPENSATE)
    if isinstance(stack, list) and stack and isinstance(stack[-1], dict) and stack[-1].get("stop") == stop:
        return stack[-1]
    return None


def story(envelope: Envelope) -> tuple[str, dict[str, Any], Envelope]:
    """(the stop that failed, the story, the envelope as it arrived there) of a message being compensated."""
    told = envelope.header[COMPENSATING]
    header = {k: v for k, v in envelope.header.items() if k not in (COMPENSATING, ATTEMPTS, RETRY)}
    header[ROUTE] = list(told["route"])
    header[COMPENSATE] = [dict(entry) for entry in told["stack"]]
    header[HISTORICAL_ROUTE] = list(header.get(HISTORICAL_ROUTE) or [])[: told["history"]]
    return told["stop"], told, Envelope(header, envelope.payload)


def tier_for(wait_s: float, tiers: tuple[int, ...]) -> int:
    """The delay tier a wait goes to: the shortest at least as long, else the longest."""
    ordered = sorted(tiers)
    return next((tier for tier in ordered if tier >= wait_s), ordered[-1])
