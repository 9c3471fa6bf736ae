"""What a dead letter holds: where and why a message failed, and its value to send it back."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from metrobus_app.config.redaction import redact_known
from metrobus_app.wire.envelope import ROUTE, Envelope, trace_id_of

# A dead letter keeps the whole value while the letter stays below this size; the producer's
# default request limit is 1,000,000 bytes and a value is base64'd when not UTF-8.
LETTER_VALUE_BYTES = 700_000
TRUNCATED_VALUE_CHARS = 1_000


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
    trace_id = trace_id_of(envelope.header) if envelope is not None else None
    if trace_id:
        body["trace_id"] = trace_id
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
