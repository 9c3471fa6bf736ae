"""Loop and runaway protection, message ids from the source, and what a dead letter holds.

Pure functions of an envelope and the settings, called by ``Bus`` on each message; each
check is a few dict lookups and ``len`` calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .envelope import HISTORICAL_ROUTE, ROUTE, Envelope
from .errors import InvalidEnvelope, MetrobusError
from .redaction import redact_known
from .settings import Settings

MAX_HOPS = "max_hops"  # header field: this message's hop limit (the busdriver may set it per route)
REPLAYS = "replays"  # header field: how often `deadletters replay` sent this message back
REPLAY_ID_HEADER = "metrobus-id"  # Kafka headers of a raw record replayed to the source topic
REPLAY_COUNT_HEADER = "metrobus-replays"
# A dead letter keeps the whole value while the letter stays below this size; the producer's
# default request limit is 1,000,000 bytes and a value is base64'd when not UTF-8.
LETTER_VALUE_BYTES = 700_000
TRUNCATED_VALUE_CHARS = 1_000


class HopLimitExceeded(MetrobusError):
    """A message was sent on more often than its hop limit allows: a loop, or a runaway route."""


class StopResultInvalid(MetrobusError):
    """A stop returned a payload that cannot go on the wire (not JSON-encodable)."""


def source_id(topic: str, partition: int, offset: int, timestamp_ms: int) -> str:
    """The id of the message made from one source record: the same every time that record is read.

    So a record processed twice (after a crash) carries the same id twice, and ``reconcile``
    can tell a duplicate from a new message. The timestamp tells apart records of a topic
    that was created again (offsets start at 0 again).
    """
    seed = f"{topic}:{partition}:{offset}:{timestamp_ms}".encode()
    return hashlib.blake2b(seed, digest_size=16).hexdigest()


def kafka_header(headers: Any, name: str) -> bytes | None:
    """One Kafka record header's value (Faust gives a list of pairs or a mapping), or None."""
    if not headers:
        return None
    if isinstance(headers, Mapping):
        return headers.get(name)
    for key, value in headers:
        if key == name:
            return value
    return None


def check_envelope(envelope: Envelope, settings: Settings) -> None:
    """Raise InvalidEnvelope when the header breaks a limit or has a field of the wrong type."""
    header = envelope.header
    limit = settings.max_route_stops
    if len(header[ROUTE]) > limit or len(header[HISTORICAL_ROUTE]) > limit:
        for name in (ROUTE, HISTORICAL_ROUTE):
            if len(header[name]) > limit:
                raise InvalidEnvelope(
                    f"header.{name} has {len(header[name])} stops, above METROBUS_MAX_ROUTE_STOPS={limit}"
                )
    message_id = header.get("id")
    if message_id is not None and not isinstance(message_id, str):
        raise InvalidEnvelope(f"header.id is a {type(message_id).__name__}, not a string")
    if MAX_HOPS in header or REPLAYS in header:
        for name, least in ((MAX_HOPS, 1), (REPLAYS, 0)):
            value = header.get(name)
            if value is not None and (type(value) is not int or value < least):
                raise InvalidEnvelope(f"header.{name} is {value!r}, not a whole number >= {least}")
    hops = header.get("hops")
    if hops is not None and not isinstance(hops, list):
        raise InvalidEnvelope(f"header.hops is a {type(hops).__name__}, not a list")


def check_route(stops: Any, settings: Settings) -> None:
    """What a busdriver returned must be a list of stop names within the route limit."""
    if len(stops) > settings.max_route_stops:
        raise InvalidEnvelope(
            f"the busdriver's route has {len(stops)} stops, above METROBUS_MAX_ROUTE_STOPS={settings.max_route_stops}"
        )


def check_hops(envelope: Envelope, settings: Settings) -> None:
    """Raise HopLimitExceeded when sending the envelope on would pass its hop limit."""
    limit = envelope.header.get(MAX_HOPS) or settings.max_hops
    made = len(envelope.header[HISTORICAL_ROUTE])
    if made >= limit:
        where = "header.max_hops" if envelope.header.get(MAX_HOPS) else "METROBUS_MAX_HOPS"
        raise HopLimitExceeded(f"the message was sent to {made} stops; its limit is {limit} ({where})")


def replays_of(envelope: Envelope | None) -> int:
    """How often this message was replayed from the dead-letter topic."""
    if envelope is None:
        return 0
    value = envelope.header.get(REPLAYS, 0)
    return value if type(value) is int else 0


def letter(
    stop: str,
    error: BaseException,
    raw: bytes | None,
    now: float,
    *,
    topic: str,
    envelope: Envelope | None = None,
    replays: int = 0,
) -> dict[str, Any]:
    """A dead letter: where and why it failed, and enough to send it back (``deadletters replay``).

    ``topic`` is where a replay sends ``value``; ``replayable`` says whether the value can go
    there at all (an envelope for a stop, a JSON object for the source topic, not cut short).
    """
    kind = type(error).__name__
    body: dict[str, Any] = {
        "stop": stop,
        "error": kind,
        "message": redact_known(str(error)),  # no configured secret in a dead letter
        "time": now,
        "id": envelope.id if envelope is not None else None,
        "topic": topic,
        "replays": replays,
    }
    if envelope is not None and isinstance(envelope.header.get(ROUTE), list):
        body["route"] = envelope.header[ROUTE][-TRUNCATED_VALUE_CHARS:]
    body.update(original_value(raw))
    body["replayable"] = envelope is not None and "value" in body and kind not in NOT_REPLAYABLE
    return body


# Errors that the same value would meet again whatever was fixed in a stop's code.
NOT_REPLAYABLE = frozenset({"InvalidEnvelope"})


def original_value(raw: bytes | None) -> dict[str, Any]:
    """The value for a dead letter: as text when UTF-8, else base64; cut short when too big to send."""
    if raw is None:
        return {"value": None}
    if len(raw) > LETTER_VALUE_BYTES:
        return {
            "value_truncated": True,
            "value_bytes": len(raw),
            "value_sha256": hashlib.sha256(raw).hexdigest(),
            "value_head_base64": base64.b64encode(raw[:TRUNCATED_VALUE_CHARS]).decode(),
        }
    try:
        return {"value": raw.decode()}
    except UnicodeDecodeError:
        return {"value_base64": base64.b64encode(raw).decode()}


def encode_letter(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def arriving(envelope: Envelope) -> bytes:
    """The envelope as its next stop would get it (route popped, history added), without changing it."""
    header = dict(envelope.header)
    next_stop = envelope.route[-1]
    header[ROUTE] = envelope.route[:-1]
    header[HISTORICAL_ROUTE] = [*envelope.header[HISTORICAL_ROUTE], next_stop]
    return Envelope(header, envelope.payload).to_bytes()


def too_large(exc: BaseException) -> bool:
    """True when a send failed because the message is above the producer's or broker's size limit."""
    from aiokafka.errors import MessageSizeTooLargeError

    return isinstance(exc, MessageSizeTooLargeError) or isinstance(exc.__cause__, MessageSizeTooLargeError)
