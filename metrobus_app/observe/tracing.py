"""One trace per message with OpenTelemetry: a span per hop, the context carried in ``header.trace``.

The busdriver's span starts the trace (or continues the one a producer put in the source
record's Kafka headers as W3C ``traceparent``); every stop's hop is a span named after its
stop, a child of the hop that sent the message there. The context travels in the envelope
(``header.trace``, which a 0.0.x stop keeps without knowing it: its hop is a gap, not a break)
and in the Kafka headers of each record the bus sends. Only the OpenTelemetry API is
needed here; ``configure`` sets up the SDK and the exporter from the ``OTEL_*`` variables
when ``METROBUS_TRACING=on`` and the process has no SDK of its own yet. With tracing off
the bus holds no ``Tracing`` and the hot path does no tracing work.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from metrobus_app.errors import ConfigError, InvalidEnvelope
from metrobus_app.wire.envelope import COMPENSATING, HOPS, TRACE, Envelope, decode_object
from metrobus_app.wire.ids import kafka_header
from metrobus_app.wire.outcome import COMPENSATION_FAILED, DEAD_LETTERED, DROPPED, EXPIRED, FORWARDED, Outcome

if TYPE_CHECKING:
    from metrobus_app.config.settings import Settings

log = logging.getLogger("metrobus.tracing")

PROPAGATOR = TraceContextTextMapPropagator()
FAILED = frozenset({DEAD_LETTERED, COMPENSATION_FAILED, EXPIRED})
_hop: contextvars.ContextVar[Span | None] = contextvars.ContextVar("metrobus_hop_span", default=None)


class Tracing:
    """Spans of one worker's hops, from one tracer."""

    def __init__(self, tracer: trace.Tracer, group: str) -> None:
        self.tracer = tracer
        self.group = group

    def start(
        self,
        name: str,
        stop: str,
        carrier: Mapping[str, str] | None,
        message: Any,
        message_id: str | None = None,
    ) -> tuple[Span, contextvars.Token[Span | None]]:
        """Start the span of one hop (``metrobus.stop``, ``.compensate``, ``.retry``, ``.delay``), child of ``carrier``.

        It is the running hop until ``end``: what this task sends on carries its context.
        """
        parent = PROPAGATOR.extract(carrier) if carrier else None
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": self.group,
            "metrobus.stop": stop,
        }
        if message is not None:
            attributes["messaging.destination.name"] = message.topic
            attributes["messaging.destination.partition.id"] = str(message.partition)
            attributes["messaging.kafka.offset"] = message.offset
        if message_id:
            attributes["messaging.message.id"] = message_id
        span = self.tracer.start_span(f"{name} {stop}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes)
        return span, _hop.set(span)

    @staticmethod
    def end(span: Span, token: contextvars.Token[Span | None], outcome: Outcome | None) -> None:
        """Say how the hop ended (None: it raised), end its span, and make the hop before it the running one."""
        _hop.reset(token)
        if outcome is None:
            span.set_status(Status(StatusCode.ERROR, "the hop raised"))
            span.end()
            return
        attributes: dict[str, Any] = {"metrobus.outcome": outcome.fate}
        envelope = outcome.envelope
        if envelope is not None and envelope.id:
            attributes["messaging.message.id"] = envelope.id
        if outcome.fate == FORWARDED:
            attributes["metrobus.next_stop"] = outcome.detail
        elif outcome.fate == DROPPED:
            attributes["metrobus.drop_reason"] = outcome.detail
        elif outcome.detail:
            attributes["error.type" if outcome.fate in FAILED else "metrobus.detail"] = outcome.detail
        if outcome.message:
            attributes["metrobus.message"] = outcome.message[:500]
        span.set_attributes(attributes)  # one call: the SDK checks every attribute it is given
        if outcome.fate in FAILED:
            span.set_status(Status(StatusCode.ERROR, f"{outcome.detail}: {outcome.message}"[:500]))
        span.end()

    async def around(
        self,
        name: str,
        stop: str,
        carrier: Mapping[str, str] | None,
        message: Any,
        run: Callable[[], Awaitable[Outcome]],
        message_id: str | None = None,
    ) -> Outcome:
        """``await run()`` as one hop's span (``start``, then ``end`` with the outcome, or an error if it raised)."""
        outcome: Outcome | None = None
        span, token = self.start(name, stop, carrier, message, message_id)
        try:
            outcome = await run()
        finally:
            self.end(span, token, outcome)
        return outcome

    def stamp(self, envelope: Envelope) -> list[tuple[str, bytes]]:
        """Put the running hop's context in ``header.trace`` and its ids in the last hop; the Kafka headers to send."""
        carrier = self.carrier()
        envelope.header[TRACE] = carrier
        ids = self.ids()
        if ids is not None:
            envelope.header[HOPS][-1].update(trace_id=ids[0], span_id=ids[1])
        return kafka_headers(carrier)

    @staticmethod
    def carrier() -> dict[str, str]:
        """The running hop's context as ``header.trace`` holds it (empty outside a hop)."""
        span = _hop.get()
        carrier: dict[str, str] = {}
        if span is not None:
            PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    @staticmethod
    def ids() -> tuple[str, str] | None:
        """(trace id, span id) of the running hop, as hex, or None."""
        span = _hop.get()
        if span is None:
            return None
        context = span.get_span_context()
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def arriving(name: str, raw: bytes | None, message: Any) -> tuple[str, dict[str, str] | None, str | None]:
    """What an arriving message says of its hop's span: its name, its parent's context, the message id.

    The parent is the hop that sent it (``header.trace``), else a producer's ``traceparent`` in
    the record's Kafka headers; a message on its way back to be undone is a ``metrobus.compensate`` span.
    The envelope is read here before the bus checks it: what is not one has no parent.
    """
    try:
        header = decode_object(raw).get("header") if raw else None
    except InvalidEnvelope:
        header = None
    if not isinstance(header, dict):
        header = {}
    carrier = header.get(TRACE)
    if not isinstance(carrier, dict):
        carrier = from_kafka_headers(getattr(message, "headers", None))
    if COMPENSATING in header:
        name = "metrobus.compensate"
    message_id = header.get("id")
    return name, carrier, message_id if isinstance(message_id, str) else None


def from_kafka_headers(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> dict[str, str] | None:
    """The W3C trace context a producer put in a record's Kafka headers, if any."""
    if not headers:
        return None
    carrier = {
        name: value.decode("latin-1")
        for name in ("traceparent", "tracestate")
        if isinstance(value := kafka_header(headers, name), bytes)
    }
    return carrier or None


def kafka_headers(carrier: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """The trace context as Kafka record headers."""
    return [(name, value.encode("latin-1")) for name, value in carrier.items()]


def configure(settings: Settings) -> Tracing | None:
    """The worker's tracing: None when off; with ``on``, the SDK set up from ``OTEL_*`` unless one is already."""
    if settings.tracing != "on":
        return None
    provider = trace.get_tracer_provider()
    if not hasattr(provider, "add_span_processor"):  # the API's default: no SDK set up by the user
        provider = _sdk_provider(settings)
        trace.set_tracer_provider(provider)
    return Tracing(provider.get_tracer("metrobus"), settings.app_id)


def _sdk_provider(settings: Settings) -> Any:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        raise ConfigError("METROBUS_TRACING=on needs the OpenTelemetry SDK: pip install 'metrobus[tracing]'") from None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or settings.app_id})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)))
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter_name == "none":
        return provider
    if exporter_name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        return provider
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            "METROBUS_TRACING=on exports over OTLP/HTTP: pip install 'metrobus[tracing]' "
            "(or OTEL_TRACES_EXPORTER=console)"
        ) from None
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def shutdown() -> None:
    """Send what the SDK still holds (at the worker's stop)."""
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if stop is not None:
        stop()
