"""The bus as an AsyncAPI 3.0.0 document: its topics, their messages, and the routes in use.

``asyncapi_document(bus)`` describes what a worker of this app knows of its bus:

- ``servers``: one per broker URL of ``METROBUS_BROKER`` (protocol ``kafka``);
- ``channels``: the source topic (raw records), one per stop's topic (the envelope of wire
  format v1, its ``payload`` the stop's input type as JSON Schema, ``{"type": "object"}`` for
  an untyped stop), each delay topic of the retries, and the dead-letter topic (its letter);
- ``operations``: the busdriver receives on the source topic, each of this app's stops on its
  own topic, the delay topics' agents on theirs, and the bus sends to the dead-letter topic;
- ``components.schemas``: the envelope's header, the dead letter and every payload type,
  pydantic's ``$defs`` moved here (``#/$defs/X`` becomes ``#/components/schemas/X``);
- ``x-metrobus-routes``: the route rules in use (the default route, each rule's steps).

``faust -A metrobus_app asyncapi`` prints it (cli/asyncapi.py); ``GET /metrobus/asyncapi.json``
answers with it (web/views.py).
"""

from __future__ import annotations

import copy
import importlib.metadata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from metrobus_app.routing.rule_set import RouteRules
from metrobus_app.wire import envelope as wire
from metrobus_app.wire import steps as wire_steps

if TYPE_CHECKING:
    from metrobus_app.core.bus import Bus
    from metrobus_app.core.payloads import PayloadType

ASYNCAPI_VERSION = "3.0.0"
SCHEMAS = "#/components/schemas/"
UNTYPED: dict[str, Any] = {"type": "object"}


def _strings(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "description": description}


_FANOUT = {
    "type": "object",
    "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 2},
}

# The header of wire format v1 (wire/envelope.py, wire/steps.py, wire/compensation.py,
# docs/writing-stops.md); fields metrobus does not know are kept as they are.
HEADER: dict[str, Any] = {
    "type": "object",
    "title": "Header",
    "description": (
        "The header of wire format v1 (compatible with metrobus 0.0.x): the route and its history, "
        "and metrobus's own fields, which a 0.0.x stop keeps without knowing them. "
        "Fields metrobus does not know are kept as they are."
    ),
    "required": [wire.ROUTE],
    "additionalProperties": True,
    "properties": {
        wire.ROUTE: _strings("The stops still ahead, a stack: the next stop is the last element."),
        wire.ORIGINAL_ROUTE: _strings("The route as the busdriver stamped it (a stack, like route)."),
        wire.HISTORICAL_ROUTE: _strings("Every stop the message was sent to, in travel order."),
        "id": {"type": "string", "description": "The message id the busdriver stamped."},
        "stamped_at": {"type": "number", "description": "When the busdriver stamped the route (epoch seconds)."},
        wire.HOPS: {
            "type": "array",
            "description": "What each stop did with the message: when it came in, when it went on, and where.",
            "items": {
                "type": "object",
                "required": ["stop"],
                "properties": {
                    "stop": {"type": "string"},
                    "received": {"type": "number", "description": "Epoch seconds."},
                    "forwarded": {"type": "number", "description": "Epoch seconds."},
                    "failed": {"type": "number", "description": "Epoch seconds, for a failed attempt."},
                    "attempt": {"type": "integer"},
                    "error": {"type": "string"},
                    "worker": {"type": "string", "description": "host:pid of the worker."},
                    "trace_id": {"type": "string", "description": "The hop's trace id, when traced."},
                },
            },
        },
        wire.MAX_HOPS: {"type": "integer", "minimum": 1, "description": "This message's hop limit."},
        wire.REPLAYS: {
            "type": "integer",
            "minimum": 0,
            "description": "How often `deadletters replay` sent this message back.",
        },
        wire_steps.FANOUT: {
            **_FANOUT,
            "description": (
                "The fan-out steps still ahead: {index: [stops]}, the index counted from the bottom of the "
                "route stack; the route holds the step's first stop."
            ),
        },
        wire_steps.ORIGINAL_FANOUT: {**_FANOUT, "description": "fanout as the busdriver stamped it."},
        wire_steps.COPY: {
            "type": "string",
            "description": 'The copy id of a fan-out copy: "1", "2", ... and "2.1" for a copy of copy 2.',
        },
        wire_steps.ROUTE_EDITS: {
            "type": "array",
            "description": "Every change a stop made to the route ahead, in order.",
            "items": {
                "type": "object",
                "required": ["stop", "edit"],
                "properties": {
                    "stop": {"type": "string"},
                    "edit": {"type": "string", "enum": ["detour", "skip", "replace"]},
                    "steps": {"type": "array"},
                    "was": {"type": "array", "description": "What was ahead before a replace."},
                    "at": {"type": "number"},
                },
            },
        },
        wire.ATTEMPTS: {"type": "integer", "minimum": 1, "description": "Failed tries at the current stop."},
        wire.RETRY: {
            "type": "object",
            "description": "The retry a message waits for in a delay topic.",
            "required": ["stop", "due"],
            "properties": {
                "stop": {"type": "string", "description": "The stop it goes back to."},
                "attempt": {"type": "integer"},
                "of": {"type": "integer", "description": "The attempts the stop's retry policy allows."},
                "due": {"type": "number", "description": "When it goes back (epoch seconds)."},
            },
        },
        wire.DEADLINE: {
            "type": "number",
            "description": "The message must reach each stop before this time (epoch seconds), or it expires.",
        },
        wire.COMPENSATE: {
            "type": "array",
            "description": "The undo stack of the stops done that can be undone, newest last.",
            "items": {
                "type": "object",
                "required": ["stop"],
                "properties": {"stop": {"type": "string"}, "log": {"description": "What the stop remembered."}},
            },
        },
        wire.COMPENSATING: {
            "type": "object",
            "description": "While the stops done are undone: where and why the message failed, and what is undone.",
            "properties": {
                "stop": {"type": "string"},
                "error": {"type": "string"},
                "message": {"type": "string"},
                "fate": {"type": "string", "enum": ["compensated", "expired"]},
                "at": {"type": "number"},
                "route": {"type": "array", "items": {"type": "string"}},
                "stack": {"type": "array", "items": {"type": "object"}},
                "history": {"type": "integer"},
                "undone": {"type": "array", "items": {"type": "string"}},
            },
        },
        wire.TRACE: {
            "type": "object",
            "description": "The W3C trace context of the hop that sent the message on.",
            "properties": {"traceparent": {"type": "string"}, "tracestate": {"type": "string"}},
        },
    },
}

# A dead letter (wire/letters.py, core/bus.py ``dead_letter``, core/recovery.py).
DEAD_LETTER: dict[str, Any] = {
    "type": "object",
    "title": "DeadLetter",
    "description": "Where and why a message failed for good, and its value, to send it back (`deadletters replay`).",
    "required": ["stop", "error", "message", "time", "topic", "replays", "replayable"],
    "properties": {
        "stop": {"type": "string", "description": "The stop (or busdriver, or delay topic) where it failed."},
        "error": {"type": "string", "description": "The exception type, e.g. InvalidPayload."},
        "message": {"type": "string", "description": "The exception's message, configured secrets redacted."},
        "time": {"type": "number", "description": "When (epoch seconds)."},
        "id": {"type": ["string", "null"], "description": "The message id; null for a raw record."},
        "topic": {"type": "string", "description": "Where a replay sends value."},
        "replays": {"type": "integer", "minimum": 0, "description": "How often it was replayed already."},
        "replayable": {"type": "boolean"},
        "route": {"type": "array", "items": {"type": "string"}, "description": "The stops that were still ahead."},
        "trace_id": {"type": "string", "description": "The message's trace id, when traced."},
        "value": {"type": ["string", "null"], "description": "The original value, as text."},
        "value_base64": {"type": "string", "description": "The original value, when not UTF-8."},
        "value_truncated": {"type": "boolean", "description": "The value was above 700,000 bytes."},
        "value_bytes": {"type": "integer"},
        "value_sha256": {"type": "string"},
        "value_head_base64": {"type": "string", "description": "The value's first 1,000 bytes."},
        "fields": {
            "type": "array",
            "description": "InvalidPayload: each field that did not validate, and why.",
            "items": {
                "type": "object",
                "required": ["field", "problem"],
                "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
            },
        },
        "failed_at": {"type": "string", "description": "Recovery: the stop where the message failed."},
        "failed_at_time": {"type": "number"},
        "compensated": {"type": "array", "items": {"type": "string"}, "description": "The stops undone."},
        "not_undone": {"type": "array", "items": {"type": "string"}, "description": "The stops left not undone."},
        "first_error": {"type": "string", "description": "A failed compensation: the failure it undid for."},
        "first_message": {"type": "string"},
    },
}


class _Components:
    """``components.schemas``, each payload type put in once, pydantic's ``$defs`` beside it."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {"Header": HEADER, "DeadLetter": DEAD_LETTER}

    def ref(self, kind: PayloadType | None) -> dict[str, Any]:
        """A ``$ref`` to ``kind``'s schema (put in on first use), or ``{"type": "object"}`` when untyped."""
        if kind is None:
            return dict(UNTYPED)
        schema = copy.deepcopy(kind.json_schema())
        defs: dict[str, Any] = schema.pop("$defs", {})
        names = {name: self._free(name, definition) for name, definition in defs.items()}
        for name, definition in defs.items():
            self.schemas[names[name]] = _rewrite(definition, names)
        schema = _rewrite(schema, names)
        if set(schema) == {"$ref"}:  # a recursive model: pydantic's schema is a $ref to its own $defs entry
            return dict(schema)
        name = self._free(kind.name, schema)
        self.schemas[name] = schema
        return {"$ref": SCHEMAS + name}

    def _free(self, name: str, schema: Any) -> str:
        """``name``, or ``name_2``, ... when a different schema holds it already."""
        candidate, n = name, 1
        while candidate in self.schemas and self.schemas[candidate] != schema:
            n += 1
            candidate = f"{name}_{n}"
        return candidate


def _rewrite(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with every ``#/$defs/X`` reference pointing at ``components/schemas``."""
    if isinstance(value, dict):
        out = {key: _rewrite(item, names) for key, item in value.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            out["$ref"] = SCHEMAS + names.get(name, name)
        return out
    if isinstance(value, list):
        return [_rewrite(item, names) for item in value]
    return value


def _envelope(payload: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["header", "payload"],
        "properties": {"header": {"$ref": SCHEMAS + "Header"}, "payload": payload},
    }


def _servers(broker: str) -> dict[str, Any]:
    urls = [url.strip() for url in broker.split(";") if url.strip()]
    servers: dict[str, Any] = {}
    for n, url in enumerate(urls, 1):
        host = url.split("://", 1)[-1].strip("/")
        name = "broker" if len(urls) == 1 else f"broker-{n}"
        servers[name] = {"host": host, "protocol": "kafka", "description": f"The Kafka broker {url}."}
    return servers


def routes_in_use(document: Mapping[str, Any] | None, source: str, revision: int = 0) -> dict[str, Any]:
    """``x-metrobus-routes``: where the rules come from, the default route, each rule name -> its steps."""
    if document is None:
        return {"source": source}
    rules: dict[str, Any] = {}
    for rule in document.get("rules", []):
        rules[rule["name"]] = {key: value for key, value in rule.items() if key != "name"}
    return {"source": source, "revision": revision, "default": document.get("default"), "rules": rules}


def _declared_routes(bus: Bus) -> dict[str, Any]:
    rules = RouteRules.of(bus)
    if rules is None:
        return routes_in_use(None, "busdriver")  # no route rules: the busdriver's function routes each record
    view = rules.view()
    if "error" in view:
        return {"source": "error", "error": view["error"]}
    return routes_in_use(view, view["source"], view["revision"])


def _version() -> str:
    try:
        return importlib.metadata.version("metrobus")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree not installed
        return "0.0.0"


def asyncapi_document(bus: Bus, routes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``bus``; ``routes`` (``routes_in_use``): else the rules this worker uses."""
    settings = bus.settings
    components = _Components()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def channel(topic: str, description: str, message_name: str, message: dict[str, Any]) -> None:
        channels[topic] = {
            "address": topic,
            "description": description,
            "messages": {message_name: {"name": message_name, "contentType": "application/json", **message}},
        }

    def operation(name: str, action: str, topic: str, summary: str) -> None:
        message = next(iter(channels[topic]["messages"]))
        operations[name] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{topic}/messages/{message}"}],
        }

    source = settings.source_topic
    busdrivers = [name for name in bus.payload_types if name not in bus.stops]
    record_type = bus.record_type
    channel(
        source,
        "Raw records enter the bus here; the busdriver stamps each one's route.",
        "record",
        {
            "title": record_type.name if record_type else "Record",
            "summary": "A raw record: a JSON object.",
            "payload": components.ref(record_type),
        },
    )
    for name in busdrivers:
        operation(
            f"{name}.receive", "receive", source, f"The busdriver {name} reads each raw record and stamps its route."
        )

    ours = set(bus.stops)
    for stop in sorted(bus.known_stops):
        types = bus.payload_types.get(stop)
        given = types.input if types else None
        where = "a stop of this app" if stop in ours else "an external stop (METROBUS_EXTERNAL_STOPS)"
        payload = components.ref(given)
        channel(
            stop,
            f"The topic of {stop}, {where}.",
            "envelope",
            {
                "title": f"{stop}'s envelope",
                "summary": f"An envelope of wire format v1 on its way to {stop}"
                + (f"; its payload a {given.name}." if given else "."),
                "payload": _envelope(payload, f"What {stop} receives: the header and the payload."),
            },
        )
        if stop in ours:
            undo = " (or the compensation that undoes it)" if stop in bus.recovery.undos else ""
            operation(f"{stop}.receive", "receive", stop, f"{stop} runs each message{undo} and sends it on its route.")

    for topic in bus.recovery.delay_topics() if bus.recovery.policies else []:
        channel(
            topic,
            "A delay topic: a message waits here until its retry is due (header.retry), then goes back to its stop.",
            "envelope",
            {
                "title": "A message waiting to retry",
                "payload": _envelope(dict(UNTYPED), "The envelope as it came to the stop that failed."),
            },
        )
        operation(f"{topic}.receive", "receive", topic, "Sends each waiting message back to its stop when due.")

    error = settings.error_topic
    channel(
        error,
        "The dead-letter topic: a message that failed for good, with where and why.",
        "deadLetter",
        {"title": "Dead letter", "payload": {"$ref": SCHEMAS + "DeadLetter"}},
    )
    operation(f"{error}.send", "send", error, "The bus sends each message that failed for good here, as a letter.")

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": settings.app_id,
            "version": _version(),
            "description": (
                f"The metrobus bus {settings.app_id!r}: routing-slip stops on Kafka. Every message between "
                "stops is an envelope of wire format v1: a header with its route, and the payload."
            ),
        },
        "defaultContentType": "application/json",
        "servers": _servers(settings.broker),
        "channels": channels,
        "operations": operations,
        "components": {"schemas": components.schemas},
        "x-metrobus-routes": dict(routes) if routes is not None else _declared_routes(bus),
    }
