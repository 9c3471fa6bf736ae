"""Message ids from the source, and the Kafka headers a replayed raw record carries."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from metrobus_app.wire.envelope import REPLAYS, Envelope

REPLAY_ID_HEADER = "metrobus-id"  # Kafka headers of a raw record replayed to the source topic
REPLAY_COUNT_HEADER = "metrobus-replays"


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
        value: bytes | None = headers.get(name)
        return value
    for key, value in headers:
        if key == name:
            return value
    return None


def replays_of(envelope: Envelope | None) -> int:
    """How often this message was replayed from the dead-letter topic."""
    if envelope is None:
        return 0
    value = envelope.header.get(REPLAYS, 0)
    return value if type(value) is int else 0
