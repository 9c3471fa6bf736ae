"""The envelope of wire format v1: a header carrying the route, and the payload.

Pure Python, no Faust: the route operations are easy to test and to reason about.
The route is a stack; the next stop is its last element (compatible with metrobus 0.0.x).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from metrobus_app.errors import InvalidEnvelope

ROUTE = "route"
ORIGINAL_ROUTE = "original_route"
HISTORICAL_ROUTE = "historical_route"
HOPS = "hops"
MAX_HOPS = "max_hops"  # this message's hop limit (the busdriver may set it per route)
REPLAYS = "replays"  # how often `deadletters replay` sent this message back
# Recovery (core/recovery.py): failed tries at the current stop, the retry it waits for in a
# delay topic, its deadline (epoch seconds), the undo stack of the stops done, and, while the
# stops done are being undone, why and what is undone so far.
ATTEMPTS = "attempts"
RETRY = "retry"
DEADLINE = "deadline"
COMPENSATE = "compensate"
COMPENSATING = "compensating"
# Tracing (observe/tracing.py): the W3C trace context of the hop that sent the message on,
# {"traceparent": "00-<trace id>-<span id>-<flags>", "tracestate": ...}.
TRACE = "trace"


def decode_object(raw: bytes | None) -> dict[str, Any]:
    """Decode a JSON object from the wire; raise InvalidEnvelope saying exactly what is wrong."""
    if raw is None:
        raise InvalidEnvelope("empty value (no bytes)")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:  # or JSON orjson refuses (NaN, integers over 64 bits): as the standard library says
        value = _standard_loads(raw)
    if not isinstance(value, dict):
        raise InvalidEnvelope(f"value is a JSON {_json_kind(value)}, not an object")
    return value


def loads_or_none(raw: bytes | None) -> Any:
    """The JSON value of ``raw``, or None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _standard_loads(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidEnvelope(f"value is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidEnvelope(f"value is not JSON: {str(exc)[:200]}") from None


# Dates and dataclasses are not JSON to the standard library either: refused, not guessed at.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def encode_json(value: Any) -> bytes:
    """Compact JSON; orjson (several times faster) where it can, the standard library where it cannot.

    orjson refuses what the standard library may take (keys that are not strings, integers
    over 64 bits, a nesting deeper than 254); what neither takes raises TypeError or ValueError.
    """
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


_NO_STOPS: list[str] = []


_STOP_LISTS = (ROUTE, ORIGINAL_ROUTE, HISTORICAL_ROUTE)


def _stop_lists(header: dict[str, Any]) -> bool:
    """Whether the header's route fields that are there are lists of str; ``str.join`` checks that in C."""
    try:
        for name in _STOP_LISTS:
            stops = header.get(name, _NO_STOPS)
            if not isinstance(stops, list):
                return False
            "".join(stops)
    except TypeError:
        return False
    return True


def _json_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")


@dataclass
class Envelope:
    """A message on the bus: ``header`` (route, history, any other fields) and ``payload``."""

    header: dict[str, Any]
    payload: Any

    @classmethod
    def stamp(cls, payload: Any, stops: Sequence[str], *, deadline_s: float | None = None, **header: Any) -> Envelope:
        """Wrap a raw record for a journey through ``stops``, given in travel order.

        With ``deadline_s`` the message must reach each stop within that many seconds of now,
        or it expires there (``header.deadline``).
        """
        if isinstance(stops, str) or not stops:
            raise ValueError(f"a route is a non-empty list of stop names, got {stops!r}")
        route = list(reversed(stops))
        now = time.time()
        fields: dict[str, Any] = {
            ROUTE: route,
            ORIGINAL_ROUTE: list(route),
            HISTORICAL_ROUTE: [],
            "id": header.pop("id", None) or uuid.uuid4().hex,
            "stamped_at": now,
        }
        if deadline_s is not None:
            fields[DEADLINE] = round(now + deadline_s, 6)
        fields.update(header)
        return cls(fields, payload)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Envelope:
        """Decode a value from a stop's topic; raise InvalidEnvelope saying exactly what is wrong."""
        return cls.from_value(decode_object(raw))

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> Envelope:
        """Check a decoded JSON object against wire format v1."""
        header = value.get("header")
        if not isinstance(header, dict):
            raise InvalidEnvelope("no 'header' object" if header is None else "'header' is not an object")
        if "payload" not in value:
            raise InvalidEnvelope("no 'payload'")
        if not _stop_lists(header):
            name = next(name for name in _STOP_LISTS if not _stop_lists({name: header.get(name, _NO_STOPS)}))
            raise InvalidEnvelope(f"header.{name} is not a list of stop names")
        if ROUTE not in header:
            raise InvalidEnvelope("header has no 'route'")
        header.setdefault(HISTORICAL_ROUTE, [])
        return cls(header, value["payload"])

    def to_bytes(self) -> bytes:
        """Encode for the wire."""
        return encode_json({"header": self.header, "payload": self.payload})

    @property
    def route(self) -> list[str]:
        """The stops still ahead, as a stack: the next stop is the last element."""
        route: list[str] = self.header[ROUTE]
        return route

    @property
    def next_stop(self) -> str | None:
        """The stop this envelope goes to next, or None at the end of its route."""
        route = self.header[ROUTE]
        return route[-1] if route else None

    @property
    def id(self) -> str | None:
        """The message id the busdriver stamped (None for envelopes made elsewhere)."""
        return self.header.get("id")

    def pop_next(self) -> str:
        """Take the next stop off the route and record it in the history."""
        header = self.header
        route: list[str] = header[ROUTE]
        if not route:
            raise IndexError("the route is empty: the message has arrived")
        stop = route.pop()
        header[HISTORICAL_ROUTE].append(stop)
        return stop

    def add_hop(self, stop: str, received: float, forwarded: float, worker: str) -> None:
        """Record that ``stop`` handled the message: when it came in, when it went on, and where."""
        # Times to the microsecond, give or take one: four times as fast as ``round(t, 6)``.
        received, forwarded = round(received * 1e6) / 1e6, round(forwarded * 1e6) / 1e6
        hop = {"stop": stop, "received": received, "forwarded": forwarded, "worker": worker}
        hops = self.header.get(HOPS)
        if isinstance(hops, list):
            hops.append(hop)
        else:
            self.header[HOPS] = [hop]

    def push_stop(self, stop: str) -> None:
        """Make ``stop`` the next stop (a detour); the rest of the route follows it."""
        self.route.append(stop)


def arriving(envelope: Envelope) -> bytes:
    """The envelope as its next stop would get it (route popped, history added), without changing it."""
    header = dict(envelope.header)
    next_stop = envelope.route[-1]
    header[ROUTE] = envelope.route[:-1]
    header[HISTORICAL_ROUTE] = [*envelope.header[HISTORICAL_ROUTE], next_stop]
    return Envelope(header, envelope.payload).to_bytes()


def trace_id_of(header: dict[str, Any]) -> str | None:
    """The trace id of ``header.trace`` (32 hex digits), or None when the message is not traced."""
    trace = header.get(TRACE)
    parent = trace.get("traceparent") if isinstance(trace, dict) else None
    if not isinstance(parent, str):
        return None
    parts = parent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
