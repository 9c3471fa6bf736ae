"""Declaring stops and the busdriver, and ``forward()``: the one place a message moves on."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import faust

from metrobus_app.caches.cache import Cache
from metrobus_app.config.settings import Settings
from metrobus_app.core.guards import HopLimitExceeded, StopResultInvalid, check_envelope, check_hops, check_route
from metrobus_app.core.payloads import KnownStops, PayloadType, StopTypes, stop_types, typed
from metrobus_app.core.recovery import Recovery, Undo
from metrobus_app.core.retry import Retry
from metrobus_app.core.route import RouteStop, fan_out, late_copies
from metrobus_app.errors import Drop, InvalidEnvelope, InvalidPayload, RouteRefused, UnknownStop
from metrobus_app.observe.stats import BusStats
from metrobus_app.observe.tracing import Tracing, from_kafka_headers
from metrobus_app.observe.tracing import arriving as arriving_span
from metrobus_app.runtime.intake import Idleness, serve_agent, timestamp_ms
from metrobus_app.runtime.producing import too_large
from metrobus_app.runtime.raw_schema import RawSchema
from metrobus_app.wire.compensation import push_undo, take_log
from metrobus_app.wire.envelope import (
    ATTEMPTS,
    COMPENSATING,
    DEADLINE,
    HISTORICAL_ROUTE,
    REPLAYS,
    RETRY,
    Envelope,
    arriving,
    decode_object,
    trace_id_of,
)
from metrobus_app.wire.ids import REPLAY_COUNT_HEADER, REPLAY_ID_HEADER, kafka_header, replays_of, source_id
from metrobus_app.wire.letters import encode_letter
from metrobus_app.wire.letters import letter as make_letter
from metrobus_app.wire.outcome import DEAD_LETTERED, DELIVERED, DROPPED, FORWARDED, Outcome
from metrobus_app.wire.steps import FANOUT, stamp

if TYPE_CHECKING:
    from typing_extensions import TypeIs

log = logging.getLogger("metrobus")

StopFunction = Callable[[Any], Any]  # what runs a message: fn(payload), or a RouteStop(envelope)
DeclaredStop = TypeVar("DeclaredStop", bound=Callable[..., Any])  # fn(payload), or fn(payload, route) with route=True
RouteResult: TypeAlias = "Sequence[str] | Envelope | None"
RouteFunction = Callable[[Any], "RouteResult | Awaitable[RouteResult]"]
Sender = Callable[..., Awaitable[None]]  # sender(topic, key, value[, headers=[(name, bytes)]])
Offer = Callable[..., bool]  # offer(topic, key, value[, headers]): taken without waiting, or False

Observer = Callable[[Outcome], None]


class Bus:
    """The stops of one Faust app and the topics between them.

    ``bus.stop("AddEmail")`` turns a function of the payload into a Faust agent on the
    topic ``AddEmail``; ``bus.busdriver()`` turns a function of a raw record into the agent
    that stamps routes on ``Source``. The bus never knows which stops exist until they
    are declared.
    """

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.stats = BusStats()
        self.stops: dict[str, Callable[..., Any]] = {}
        self.caches: dict[str, Cache] = {}
        self.agents: dict[str, faust.types.AgentT[Any]] = {}
        self._topics: dict[str, faust.TopicT] = {}
        self.sender = self._send_to_topic
        self.observers: list[Observer] = [self.stats.record]
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.idleness = Idleness()  # of this worker's stops: when all wait, the sender's open batches go
        # Called with the route rules when a busdriver's module declares them (routing.rule_set).
        self.rule_set_listeners: list[Callable[[Any], None]] = []
        self._known_stops: KnownStops | None = None
        self.record_type: PayloadType | None = None  # what the busdriver takes, when it says
        self.recovery = Recovery(self)  # retry policies, compensations, delay topics (core/recovery.py)
        self._undos = self.recovery.undos  # the stops with a compensation, looked up on every message
        self.calls: dict[str, Callable[..., Any]] = {}  # what each stop's agent calls: the stop, typed or not
        self.payload_types: dict[str, StopTypes] = {}  # of the stops and the busdriver (core/payloads.py)
        self.tracing: Tracing | None = None  # a span per hop when on (observe/tracing.py); the worker sets it

    @property
    def sender(self) -> Sender:
        """How a message is sent to a topic: ``await sender(topic, key, value)``."""
        return self._sender

    @sender.setter
    def sender(self, send: Sender) -> None:
        self._sender = send
        self.offer: Offer | None = None  # the sender's way without a coroutine; set by the sender's owner

    @property
    def known_stops(self) -> KnownStops:
        """Stops a route may name: this app's own and the configured external ones, with their payload types."""
        if self._known_stops is None:
            names = frozenset(self.stops) | frozenset(self.settings.external_stops)
            self._known_stops = KnownStops(names, self.payload_types, self.record_type)
        return self._known_stops

    def topic(self, name: str) -> faust.TopicT:
        """The topic of a stop (or Source, Error), declared with the bus's partition count."""
        try:
            return self._topics[name]
        except KeyError:
            topic = self._topics[name] = self.app.topic(
                name,
                schema=RawSchema(),
                partitions=self.settings.partitions,
                replicas=self.settings.topic_replication,
                internal=True,
            )
            return topic

    def cache(self, name: str, help: str = "") -> Cache:
        """Declare a lookup cache: a str -> str table every worker holds whole (see ``caches/cache.py``)."""
        if name in self.caches:
            raise ValueError(f"cache {name!r} is declared twice")
        cache = self.caches[name] = Cache(name, f"{self.settings.app_id}-{name}-changelog", help)
        return cache

    def changelog_topic(self, cache: Cache) -> faust.TopicT:
        """The compacted, single-partition topic that holds a cache's content."""
        return self.app.topic(
            cache.changelog, partitions=1, compacting=True, internal=True, key_serializer="raw", value_serializer="raw"
        )

    async def caches_ready(self) -> None:
        """Wait until every cache has caught up with its changelog."""
        for cache in self.caches.values():
            await cache.ready.wait()

    async def declare_topics(self) -> None:
        """Create the topics this worker may send to without consuming them."""
        delay_topics = self.recovery.delay_topics() if self.recovery.policies else []
        for name in (self.settings.error_topic, *sorted(self.known_stops), *delay_topics):
            await self.topic(name).maybe_declare()
        for cache in self.caches.values():
            await self.changelog_topic(cache).maybe_declare()

    def stop(
        self, name: str, *, concurrency: int = 1, route: bool = False, retry: Retry | None = None
    ) -> Callable[[DeclaredStop], DeclaredStop]:
        """Declare a stop: ``fn(payload)`` returns the payload to go on, or None to drop it.

        ``fn`` may be sync or async; it may raise ``Drop(reason)``. Any other exception
        sends the message to the dead-letter topic. The function is returned unchanged,
        so it can be called directly in tests. With ``route=True`` it is ``fn(payload,
        route)``: ``route`` (``metrobus_app.core.route.Route``) can detour, skip or replace the
        steps ahead.

        ``retry`` (a ``Retry``) tries a passing failure again; ``@fn.compensate`` declares how
        to undo the stop when the message fails for good later (see ``core/recovery.py``).
        """

        def register(fn: DeclaredStop) -> DeclaredStop:
            if name in self.stops:
                raise ValueError(f"stop {name!r} is declared twice")
            self._known_stops = None
            self.stops[name] = fn
            types = self.payload_types[name] = stop_types(fn)
            if retry is not None:
                self.recovery.policies[name] = retry
                self._add_delay_agents(name)
            with contextlib.suppress(AttributeError, TypeError):  # a builtin or a bound method takes no attribute
                fn.compensate = self.recovery.compensation(name)  # type: ignore[attr-defined]
            checked = typed(fn, name, types)  # the payload validated by its annotation; untyped: fn itself
            call: StopFunction = RouteStop(checked, name, lambda: self.known_stops) if route else checked
            self.calls[name] = call

            async def run(stream: faust.StreamT[Any]) -> AsyncIterator[Outcome]:
                await self.caches_ready()
                async for outcome in serve_agent(stream, partial(self.handle, name, call), self.idleness):
                    yield outcome

            run.__name__ = run.__qualname__ = f"stop_{name}"
            self._add_agent(name, self.topic(name), run, concurrency)
            return fn

        return register

    def compensate(self, stop: str) -> Callable[[Undo], Undo]:
        """Declare how ``stop`` is undone: ``undo(payload, log)`` (the same as ``@fn.compensate``)."""
        return self.recovery.compensation(stop)

    def stop_agents(self) -> list[str]:
        """The stops (and busdriver) this worker runs; not the delay topics' agents."""
        delay = set(self.recovery.delay_topics())
        return [name for name in self.agents if name not in delay]

    def _add_delay_agents(self, stop: str) -> None:
        """An agent per delay tier that sends waiting messages back to their stop when due, once per bus.

        Only a worker that runs a stop with a retry policy runs them.
        """
        if self.settings.stops and stop not in self.settings.stops:
            return
        for topic in self.recovery.delay_topics():
            if topic in self.agents:
                continue

            async def run(stream: faust.StreamT[Any], topic: str = topic) -> AsyncIterator[Outcome]:
                async for outcome in serve_agent(stream, partial(self._send_back, topic), self.idleness):
                    yield outcome

            run.__name__ = run.__qualname__ = topic
            self.agents[topic] = self.app.agent(self.topic(topic), name=f"metrobus.{topic}")(run)

    async def _send_back(self, topic: str, key: bytes | None, raw: bytes | None, message: Any = None) -> Outcome:
        """A delay topic's agent: send one message back to its stop when due, observed like a stop's."""
        received_at, started = time.time(), time.perf_counter()
        if self.tracing is not None:
            return await self._traced(topic, _no_stop, key, raw, message, received_at, started, "metrobus.delay")
        return self._observed(await self.recovery.send_back(topic, key, raw), received_at, started)

    def busdriver(self, name: str = "busdriver") -> Callable[[RouteFunction], RouteFunction]:
        """Declare the busdriver: ``fn(record)`` returns the route (stops in travel order).

        It may also return a ready ``Envelope`` or None to drop the record. Records come
        from the source topic as plain JSON objects.
        """

        def register(fn: RouteFunction) -> RouteFunction:
            types = self.payload_types[name] = stop_types(fn)
            self.record_type, self._known_stops = types.input, None
            checked = typed(fn, name, StopTypes(types.input))  # a route, not a payload, comes back
            self.calls[name] = checked

            async def run(stream: faust.StreamT[Any]) -> AsyncIterator[Outcome]:
                async for outcome in serve_agent(stream, partial(self.handle_record, name, checked), self.idleness):
                    yield outcome

            run.__name__ = run.__qualname__ = name
            self._add_agent(name, self.topic(self.settings.source_topic), run, 1)
            return fn

        return register

    def _add_agent(self, name: str, topic: faust.TopicT, run: Callable[..., Any], concurrency: int) -> None:
        """Make ``run`` the agent of stop ``name``, unless this worker runs other stops only."""
        if self.settings.stops and name not in self.settings.stops:
            return
        self.agents[name] = self.app.agent(topic, name=f"metrobus.{name}", concurrency=concurrency)(run)

    async def handle(
        self, stop: str, fn: StopFunction, key: bytes | None, raw: bytes | None, message: Any = None
    ) -> Outcome:
        """Run one message through a stop and send it on; never raises (``message``, the record, is for tracing)."""
        received_at, started = time.time(), time.perf_counter()
        if self.tracing is not None:
            return await self._traced(stop, fn, key, raw, message, received_at, started)
        return self._observed(await self._handle(stop, fn, key, raw, received_at), received_at, started)

    async def _traced(
        self,
        stop: str,
        fn: StopFunction,
        key: bytes | None,
        raw: bytes | None,
        message: Any,
        received_at: float,
        started: float,
        kind: str = "metrobus.stop",
    ) -> Outcome:
        """``handle`` in a span of its own, child of the hop that sent the message (``header.trace``)."""
        assert self.tracing is not None
        kind, carrier, message_id = arriving_span(kind, raw, message)
        if kind == "metrobus.delay":
            run = partial(self.recovery.send_back, stop, key, raw)
        else:
            run = partial(self._handle, stop, fn, key, raw, received_at)
        outcome = await self.tracing.around(kind, stop, carrier, message, run, message_id)
        return self._observed(outcome, received_at, started)

    async def handle_record(
        self, stop: str, fn: RouteFunction, key: bytes | None, raw: bytes | None, message: Any = None
    ) -> Outcome:
        """Stamp a route on one raw record and send it to its first stop; never raises.

        ``message`` is the source record (Faust's message or aiokafka's record, as
        ``intake.serve`` hands it over): its position gives the message id
        (``wire.ids.source_id``), the same each time the record is read.
        """
        received_at, started = time.time(), time.perf_counter()
        if self.tracing is None:
            return self._observed(
                await self._handle_record(stop, fn, key, raw, message, received_at), received_at, started
            )
        handled = partial(self._handle_record, stop, fn, key, raw, message, received_at)
        carrier = from_kafka_headers(getattr(message, "headers", None))  # a producer's trace, if it started one
        return self._observed(
            await self.tracing.around("metrobus.stop", stop, carrier, message, handled), received_at, started
        )

    async def run_stop(
        self, stop: str, fn: StopFunction, key: bytes | None, raw: bytes | None, received_at: float
    ) -> Outcome:
        """Run one message through a stop (``handle`` without observing the outcome): for a retry in place."""
        if self.tracing is None:
            return await self._handle(stop, fn, key, raw, received_at)
        handled = partial(self._handle, stop, fn, key, raw, received_at)
        return await self.tracing.around("metrobus.retry", stop, self.tracing.carrier(), None, handled)

    def observe(self, outcome: Outcome, received_at: float, started: float) -> Outcome:
        """Hand an outcome to the observers (stats, fates), timed from ``received_at`` and ``started``."""
        return self._observed(outcome, received_at, started)

    def _observed(self, outcome: Outcome, received_at: float, started: float) -> Outcome:
        outcome.received_at, outcome.elapsed = received_at, time.perf_counter() - started
        for observe in self.observers:
            observe(outcome)
        return outcome

    async def _send_late_copies(self, stop: str, key: bytes | None, envelope: Envelope) -> None:
        """Send the copies a 0.0.x stop did not make (see ``late_copies``); called on arrival, before the stop runs."""
        for copy in late_copies(envelope, stop):
            to = copy.header[HISTORICAL_ROUTE][-1]
            if to in self.known_stops:
                await self.sender(to, key, copy.to_bytes())
            else:
                error = UnknownStop(f"fan-out names unknown stop {to!r} (known: {', '.join(sorted(self.known_stops))})")
                await self.dead_letter(stop, key, copy.to_bytes(), error, copy)

    async def _handle(
        self, stop: str, fn: StopFunction, key: bytes | None, raw: bytes | None, received_at: float
    ) -> Outcome:
        try:
            envelope = Envelope.from_bytes(self._check_size(raw))
            check_envelope(envelope, self.settings)
        except InvalidEnvelope as exc:
            return await self.dead_letter(stop, key, raw, exc)
        header = envelope.header
        retried = False
        if not header.keys().isdisjoint(RECOVERY_FIELDS):  # rare: one C call when none is there
            arrived = await self.recovery.on_arrival(stop, fn, key, raw, envelope, received_at)
            if arrived is not None:
                return arrived
            retried = ATTEMPTS in header
        if FANOUT in header:  # a 0.0.x stop may have passed a fan-out step: copy it here
            await self._send_late_copies(stop, key, envelope)
        try:
            payload = fn(envelope if isinstance(fn, RouteStop) else envelope.payload)
            if _awaitable(payload):
                payload = await payload
        except Drop as drop:
            return self._dropped(stop, drop.reason, envelope)
        except Exception as exc:
            if isinstance(exc, InvalidPayload):  # said field by field in the letter; no traceback
                log.warning("%s%s", exc, _trace_note(header))
            else:
                log.exception("stop %s failed on message %s%s", stop, envelope.id, _trace_note(header))
            return await self.recovery.failed(stop, fn, key, raw, envelope, exc, received_at, time.perf_counter())
        if payload is None:
            return self._dropped(stop, f"{stop} returned None", envelope)
        if retried:  # the count is per stop: the next one starts at none
            del header[ATTEMPTS]
        if stop in self._undos:
            push_undo(envelope, stop, take_log())
        original, envelope.payload = envelope.payload, payload
        try:
            return await self.forward(envelope, key, stop=stop, received_at=received_at)
        except (TypeError, ValueError, RecursionError) as exc:  # the payload does not encode as JSON
            envelope.payload = original
            error = StopResultInvalid(f"{stop} returned a payload that is not JSON: {type(exc).__name__}: {exc}")
            return await self.dead_letter(stop, key, raw, error, envelope)

    async def _handle_record(
        self, stop: str, fn: RouteFunction, key: bytes | None, raw: bytes | None, message: Any, received_at: float
    ) -> Outcome:
        # The message id comes from the record's place in the source topic (a replayed record
        # keeps the id it had): a stub envelope carries it to the observers until there is one.
        headers = getattr(message, "headers", None)
        replayed_id = kafka_header(headers, REPLAY_ID_HEADER) if headers else None
        if replayed_id:
            message_id = replayed_id.decode(errors="replace")
        elif message is not None:
            message_id = source_id(message.topic, message.partition, message.offset, timestamp_ms(message))
        else:
            message_id = None
        replays = int(kafka_header(headers, REPLAY_COUNT_HEADER) or 0) if replayed_id else 0
        stub = Envelope({"id": message_id, REPLAYS: replays}, None) if message_id else None
        try:
            record = decode_object(self._check_size(raw))
        except InvalidEnvelope as exc:
            return await self.dead_letter(stop, key, raw, exc, stub)
        try:
            route = fn(record)
            if _awaitable(route):
                route = await route
            if route is None:
                return self._dropped(stop, f"{stop} gave no route", stub)
            if isinstance(route, Envelope):
                envelope = route
                if message_id:
                    envelope.header["id"] = message_id
            else:
                check_route(route, self.settings)
                known = self._known_stops or self.known_stops
                if known.typed and (problem := known.busdriver_problem(route)):
                    raise RouteRefused(problem)
                envelope = stamp(record, route, **({"id": message_id} if message_id else {}))  # with fan-out steps
            if replays:  # (only a replayed record has them, and it has its id)
                envelope.header[REPLAYS] = replays
        except Drop as drop:
            return self._dropped(stop, drop.reason, stub)
        except Exception as exc:
            if isinstance(exc, InvalidPayload | RouteRefused):
                log.warning("%s", exc)
            else:
                log.exception("%s failed on a record", stop)
            return await self.dead_letter(stop, key, raw, exc, stub)
        try:
            return await self.forward(envelope, key, stop=stop, received_at=received_at)
        except (TypeError, ValueError, RecursionError) as exc:
            error = StopResultInvalid(f"{stop} made an envelope that is not JSON: {type(exc).__name__}: {exc}")
            return await self.dead_letter(stop, key, raw, error, stub)

    async def forward(
        self, envelope: Envelope, key: bytes | None, *, stop: str, received_at: float | None = None
    ) -> Outcome:
        """Pop the next stop off the route and send the envelope there, key unchanged.

        Not Faust's ``Event.forward`` (which re-sends a raw value): this one moves an
        envelope along its route. An empty route means ``stop`` was the last: delivered.
        A route naming a stop the bus does not know is dead-lettered. Each forward appends
        a hop to ``header.hops``: the stop, when it received and forwarded, and the worker.
        """
        next_stop = envelope.next_stop
        if next_stop is None:
            return Outcome(stop, DELIVERED, "", envelope)  # positional: keywords cost a dataclass 60% more
        if next_stop not in (self._known_stops or self.known_stops):
            error = UnknownStop(
                f"route names unknown stop {next_stop!r} (known: {', '.join(sorted(self.known_stops))})"
            )
            return await self.dead_letter(stop, key, arriving(envelope), error, envelope, topic=next_stop)
        try:
            check_hops(envelope, self.settings)
        except HopLimitExceeded as error:
            return await self.dead_letter(stop, key, arriving(envelope), error, envelope, topic=next_stop)
        if FANOUT in envelope.header:
            copies = fan_out(envelope)
            if len(copies) > 1:
                return await self._fan_out(envelope, copies, key, stop=stop, received_at=received_at)
        envelope.pop_next()
        now = time.time()
        envelope.add_hop(stop, received_at or now, now, self.worker_id)
        if self.tracing is not None:
            return await self._forward_traced(envelope, key, next_stop, stop=stop)
        value = envelope.to_bytes()
        offer = self.offer
        try:
            if offer is None or not offer(next_stop, key, value):
                await self._sender(next_stop, key, value)
        except Exception as exc:
            if not too_large(exc):
                raise
            return await self.dead_letter(stop, key, value, exc.__cause__ or exc, envelope, topic=next_stop)
        return Outcome(stop, FORWARDED, next_stop, envelope)

    async def _forward_traced(self, envelope: Envelope, key: bytes | None, next_stop: str, *, stop: str) -> Outcome:
        """The send of ``forward`` with the running hop's trace context in ``header.trace`` and the Kafka headers."""
        assert self.tracing is not None
        headers = self.tracing.stamp(envelope)
        value = envelope.to_bytes()
        offer = self.offer
        try:
            if offer is None or not offer(next_stop, key, value, headers):
                await self._sender(next_stop, key, value, headers=headers)
        except Exception as exc:
            if not too_large(exc):
                raise
            return await self.dead_letter(stop, key, value, exc.__cause__ or exc, envelope, topic=next_stop)
        return Outcome(stop, FORWARDED, next_stop, envelope)

    async def _fan_out(
        self, envelope: Envelope, copies: list[Envelope], key: bytes | None, *, stop: str, received_at: float | None
    ) -> Outcome:
        """Forward one copy to each stop of a fan-out step (``route.fan_out``); all or, for an unknown stop, none."""
        names = [copy.route[-1] for copy in copies]
        unknown = [name for name in names if name not in self.known_stops]
        if unknown:
            known = ", ".join(sorted(self.known_stops))
            error = UnknownStop(f"fan-out names unknown stop {unknown[0]!r} (known: {known})")
            value = arriving(copies[names.index(unknown[0])])
            return await self.dead_letter(stop, key, value, error, envelope, topic=unknown[0])
        for copy in copies:
            outcome = await self.forward(copy, key, stop=stop, received_at=received_at)
            if outcome.fate != FORWARDED:
                return outcome
        return Outcome(stop, FORWARDED, "+".join(names), envelope=envelope, copies=len(copies))

    async def dead_letter(
        self,
        stop: str,
        key: bytes | None,
        raw: bytes | None,
        error: BaseException,
        envelope: Envelope | None = None,
        *,
        topic: str | None = None,
        fate: str = DEAD_LETTERED,
        story: dict[str, Any] | None = None,
        outcome_stop: str | None = None,
    ) -> Outcome:
        """Send a message the bus cannot handle to the dead-letter topic, with why.

        The letter (``wire.letters.letter``) holds the value, the message id, its route, how often
        it was replayed, and ``topic``: where ``deadletters replay`` sends it back (by default
        the topic the failing stop reads). ``story`` (what recovery did) goes into the letter;
        the outcome has ``fate`` and, when given, ``outcome_stop`` as its stop.
        """
        kind = getattr(error, "kind", None) or type(error).__name__
        note = _trace_note(envelope.header) if envelope is not None else ""
        log.warning("dead-lettering a message at %s: %s: %s%s", stop, kind, error, note)
        if topic is None:
            topic = stop if stop in self.stops else self.settings.source_topic
        replays = replays_of(envelope)
        letter = make_letter(stop, error, raw, time.time(), topic=topic, envelope=envelope, replays=replays)
        problems = getattr(error, "problems", None)
        if problems:
            letter["fields"] = problems
        if story:
            letter["error"] = kind
            letter.update(story)
        await self.sender(self.settings.error_topic, key, encode_letter(letter))
        detail = getattr(error, "detail", None) or kind
        return Outcome(outcome_stop or stop, fate, detail, envelope=envelope, message=letter["message"])

    def _dropped(self, stop: str, reason: str, envelope: Envelope | None = None) -> Outcome:
        log.debug("%s dropped a message: %s", stop, reason)
        return Outcome(stop, DROPPED, reason, envelope)

    def _check_size(self, raw: bytes | None) -> bytes | None:
        limit = self.settings.max_message_bytes
        if raw is not None and len(raw) > limit:
            raise InvalidEnvelope(f"value is {len(raw)} bytes, above METROBUS_MAX_MESSAGE_BYTES={limit}")
        return raw

    async def _send_to_topic(self, topic: str, key: bytes | None, value: bytes) -> None:
        await self.topic(topic).send(key=key, value=value)


def _awaitable(result: object) -> TypeIs[Awaitable[Any]]:
    """Whether a stop's result must be awaited; what most stops return is known without an ABC check."""
    return result is not None and result.__class__ not in _PLAIN and inspect.isawaitable(result)


_PLAIN = frozenset({dict, list, str, int, float, bool})


def _trace_note(header: dict[str, Any]) -> str:
    """`` (trace <id>)`` for a log line about a traced message, else nothing."""
    trace_id = trace_id_of(header)
    return f" (trace {trace_id})" if trace_id else ""


def _no_stop(payload: Any) -> Any:  # a delay topic's agent runs no stop function
    return payload


# Header fields that make recovery look at a message on arrival (core/recovery.py).
RECOVERY_FIELDS = frozenset({RETRY, DEADLINE, COMPENSATING, ATTEMPTS})
