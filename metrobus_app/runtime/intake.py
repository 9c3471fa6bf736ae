"""A stop's records, read from its Faust stream's queue and handled one by one at a low cost per record.

Faust's stream iterator passes once through the event loop (``asyncio.sleep(0)``) for every
event, awaits the queue even when it holds events, and runs the stream sensors; an async
generator between the queue and the stop costs a suspension per event as well. ``serve``
reads the same queue, which Faust's conductor fills from the agent's topic, calls the stop
on each event and keeps what the iterator promises: an event is acked once the stop handled
it, events fetched before a rebalance are skipped as Faust skips them, and the loop gives
way to other tasks every ``yield_every`` events (benchmarks/bus_benchmark.py: a quarter less
CPU per record than Faust's iterator, and a few percent less again than an async generator).

The same queue also takes a ``Batch``: aiokafka's records of one partition fetched together,
which the bus's consumer (``runtime/transport.py``) puts there in place of one Faust message and event
per record when the agent serving the channel is the partition's only reader (``Inbox``). A
batch's records are handled in order and acked together, without a Faust message, event,
conductor callback or ack per record (that path was a fifth of a stop's CPU by
``bus_benchmark.py --profile``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import faust
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.agents.agent import current_agent
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from metrobus_app.runtime.transactions import TransactionGate, gate_of

if TYPE_CHECKING:
    from faust.agents import Agent
    from faust.channels import Channel
    from faust.streams import Stream
    from faust.transport.conductor import Conductor
    from faust.transport.consumer import Consumer

# key, value, and what they came in: Faust's message for an event, aiokafka's record in a
# batch (timestamps in seconds and in milliseconds: ``timestamp_ms``).
Handler = Callable[[bytes | None, bytes | None, Message | ConsumerRecord], Awaitable[Any]]


class Batch(NamedTuple):
    """aiokafka's records of one partition fetched together, in offset order, and their consumer generation."""

    tp: TopicPartition
    records: list[ConsumerRecord]
    generation: int


class Inbox:
    """Where the consumer puts batches for one agent's channel, and how many records wait there.

    Faust pauses fetching a partition while its channel's queue holds ``stream_buffer_maxsize``
    events and resumes it below half; an inbox does the same counting records, not batches.
    Only records still in the queue count (not the batch being handled); a queue found empty
    counts none, as after Faust clears the queues at a rebalance. The actors of an agent with
    ``concurrency`` above 1 read one channel: they share its inbox (``readers``).
    """

    def __init__(self, app: faust.App, queue: asyncio.Queue) -> None:
        self.consumer = app.consumer
        self.queue = queue
        self.limit = max(app.conf.stream_buffer_maxsize, 1)
        self.waiting = 0
        self.paused: set[TP] = set()
        self.readers = 0

    async def put(self, batch: Batch) -> None:
        """Queue a batch (waiting while the queue is full of batches), pausing its partition above the limit."""
        if self.queue.empty():
            self.waiting = 0
        await self.queue.put(batch)
        self.waiting += len(batch.records)
        if self.waiting >= self.limit:
            tp = TP(batch.tp.topic, batch.tp.partition)  # Faust's kind, as its active partitions hold
            if tp not in self.paused:
                self.paused.add(tp)
                self.consumer.on_buffer_full(tp)

    def taken(self, batch: Batch) -> None:
        """``batch`` left the queue: resume the paused partitions once at most half the limit waits."""
        self.waiting = self.waiting - len(batch.records) if not self.queue.empty() else 0
        if self.paused and self.waiting <= self.limit // 2:
            for tp in self.paused:
                self.consumer.on_buffer_drop(tp)
            self.paused.clear()


class Idleness:
    """How many of a worker's serve loops run and how many wait for records.

    ``when_all_wait`` is called each time the last busy loop starts waiting: nothing more is
    coming to this worker for now, so whatever it holds back to gather (the bus's open
    batches, ``producing.BatchingSend.ship_soon``) can go at once instead of after the linger.
    """

    def __init__(self) -> None:
        self.loops = 0
        self.waiting = 0
        self.when_all_wait: Callable[[], Any] | None = None

    def wait(self) -> None:
        self.waiting += 1
        if self.waiting >= self.loops and self.when_all_wait is not None:
            self.when_all_wait()


def inbox_of(channel: Any) -> Inbox | None:
    """The inbox of a channel that ``serve`` reads, or None (Faust's events only)."""
    inbox = getattr(channel, "metrobus_inbox", None)
    return inbox if inbox is not None and inbox.readers else None


async def serve(
    stream: faust.StreamT,
    handle: Handler,
    *,
    on_result: Callable[[Any], Awaitable[None]] | None = None,
    yield_every: int = 64,
    idleness: Idleness | None = None,
) -> None:
    """Await ``handle(key, value, message)`` for every record of ``stream``, ack it, pass its result to ``on_result``.

    Ends as Faust's iterator ends: when the channel stops the iteration (the agent stops).
    A record whose handling was interrupted (an exception, a cancel) is not acked, so its
    offset is not committed and it is read again after a restart (at least once); an event's
    is taken out of the consumer's unacked set, or a rebalance would wait for it forever.
    While ``handle`` runs on a Faust event, ``faust.current_event()`` is the event; on a
    record of a ``Batch`` it is None.
    """
    # Faust's abstract types (StreamT, AppT, ConductorT, ConsumerT) leave out what is read here:
    # the concrete classes behind them, which a worker runs, have it.
    stream = cast("Stream[Any]", stream)
    app, channel = cast("faust.App", stream.app), cast("Channel[Any]", stream.channel)
    queue = channel.queue
    flow_control, consumer = app.flow_control, cast("Consumer", app.consumer)
    acking_topics = cast("Conductor", app.topics)._acking_topics
    unacked = consumer._unacked_messages
    set_current_event = stream._set_current_event
    gate = gate_of(app)  # exactly-once: each batch or event a unit (runtime/transactions.py)
    unit = None
    since_yield = 0
    started_here = await stream.maybe_start()
    inbox = getattr(channel, "metrobus_inbox", None)
    if inbox is None:
        inbox = channel.metrobus_inbox = Inbox(app, queue)  # type: ignore[attr-defined]  # ours, on Faust's channel
    inbox.readers += 1
    if idleness is None:
        idleness = Idleness()
    idleness.loops += 1
    item: Any = None
    try:
        while not stream.should_stop:
            if since_yield >= yield_every:
                since_yield = 0
                await asyncio.sleep(0)
            try:  # a stopping actor throws StopAsyncIteration into the queue: either get raises it
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    since_yield = 0
                    idleness.wait()
                    try:
                        item = await channel.__anext__()
                    finally:
                        idleness.waiting -= 1
            except StopAsyncIteration:
                return
            if item.__class__ is Batch:
                batch, item = item, None
                inbox.taken(batch)
                if gate is None:
                    await _serve_batch(app, batch, handle, on_result, yield_every)
                else:
                    await _serve_batch_in_transactions(app, batch, handle, on_result, gate)
                since_yield = 0
                continue
            since_yield += 1
            message = item.message
            if not flow_control.is_active() or message.generation_id != app.consumer_generation_id:
                item.ack()  # fetched before a rebalance: skipped and acked, as Faust's iterator does
                item = None
                continue
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                unacked.add(message)
            set_current_event(item)  # what faust.current_event() returns inside the stop
            if gate is not None:
                unit = gate.start(message.topic, message.partition)
            result = await handle(item.key, item.value, message)
            item.ack()
            item = None
            set_current_event(None)
            if unit is not None:
                gate.end(unit, acked=True)  # type: ignore[union-attr]  # a unit only comes with a gate
                unit = None
            if on_result is not None:
                await on_result(result)
    finally:
        if item is not None:
            unacked.discard(item.message)
            set_current_event(None)
        if unit is not None:
            gate.end(unit, acked=False)  # type: ignore[union-attr]
        inbox.readers -= 1
        idleness.loops -= 1
        stream._channel_stop_iteration(channel)
        if started_here:
            await stream.stop()


async def _serve_batch(
    app: faust.App,
    batch: Batch,
    handle: Handler,
    on_result: Callable[[Any], Awaitable[None]] | None,
    yield_every: int,
) -> None:
    """Handle a batch's records in order; ack those handled, unless a rebalance came meanwhile.

    Records left after a rebalance began are neither handled nor acked: the partition is
    read again from its committed offset (by this worker or its new owner).
    """
    flow_control, generation = app.flow_control, batch.generation
    done: list[int] = []
    try:
        for n, record in enumerate(batch.records, 1):
            if not flow_control.is_active() or app.consumer_generation_id != generation:
                return
            result = await handle(record.key, record.value, record)
            done.append(record.offset)
            if on_result is not None:
                await on_result(result)
            if n % yield_every == 0:
                await asyncio.sleep(0)
    finally:
        if done and flow_control.is_active() and app.consumer_generation_id == generation:
            ack_offsets(app.consumer, batch.tp, done)


async def _serve_batch_in_transactions(
    app: faust.App,
    batch: Batch,
    handle: Handler,
    on_result: Callable[[Any], Awaitable[None]] | None,
    gate: TransactionGate,
) -> None:
    """``_serve_batch`` in exactly-once mode: each record a unit of ``gate``, acked as soon as it is handled.

    So a commit may come between any two records, and a stop that waits before it sends (a
    delay topic's agent until a message is due, a retry in place) never holds a commit back.
    """
    flow_control, generation, consumer, tp = app.flow_control, batch.generation, app.consumer, batch.tp
    for record in batch.records:
        if not flow_control.is_active() or app.consumer_generation_id != generation:
            return
        unit, acked = gate.start(tp.topic, tp.partition), False
        try:
            result = await handle(record.key, record.value, record)
            if flow_control.is_active() and app.consumer_generation_id == generation:
                ack_offsets(consumer, tp, [record.offset])
                acked = True
        finally:
            gate.end(unit, acked=acked)
        if on_result is not None:
            await on_result(result)


def ack_offsets(consumer: Any, tp: TP | TopicPartition, offsets: list[int]) -> None:
    """What Faust's ``Consumer.ack`` does for one message, for many offsets of one partition at once.

    The acked offsets are kept under aiokafka's kind of partition, as Faust's messages carry
    it: a commit hands those keys to aiokafka, whose transactional commit refuses any other.
    """
    tp = TopicPartition(tp.topic, tp.partition)
    with ack_lock:
        committed = consumer._committed_offset[tp]
        if committed is not None:
            offsets = [offset for offset in offsets if offset >= committed]
        index = consumer._acked_index[tp]
        fresh = [offset for offset in offsets if offset not in index]
        index.update(fresh)
        consumer._acked[tp].extend(fresh)
        consumer._n_acked += len(fresh)
        notify(consumer._waiting_for_ack)


def timestamp_ms(message: Message | ConsumerRecord) -> int:
    """When a record was written, in milliseconds, from either kind of message a ``Handler`` gets."""
    if isinstance(message, ConsumerRecord):
        return message.timestamp
    return round(message.timestamp * 1000)


async def serve_agent(stream: faust.StreamT, handle: Handler, idleness: Idleness | None = None) -> AsyncIterator[Any]:
    """``serve`` as the body of a Faust agent; each result goes to the agent's sinks, if it has some.

    An async generator, so that Faust lets the agent have sinks, which yields nothing: Faust
    handles every yielded value (a debug log line, a reply check), about 4% of a stop's CPU
    for values nobody reads, so the results go to the sinks (Faust's test context adds one
    for ``agent.results``) from here, and only when the agent has sinks when it starts.
    """
    agent = cast("Agent | None", current_agent())  # the concrete agent: AgentT has no sinks
    to_sinks = agent._delegate_to_sinks if agent is not None and agent._sinks else None
    await serve(stream, handle, on_result=to_sinks, idleness=idleness)
    return
    yield  # never reached
