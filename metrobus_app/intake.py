"""A stop's events, read from its Faust stream's queue and handled one by one at a low cost per event.

Faust's stream iterator passes once through the event loop (``asyncio.sleep(0)``) for every
event, awaits the queue even when it holds events, and runs the stream sensors; an async
generator between the queue and the stop costs a suspension per event as well. ``serve``
reads the same queue, which Faust's conductor fills from the agent's topic, calls the stop
on each event and keeps what the iterator promises: an event is acked once the stop handled
it, events fetched before a rebalance are skipped as Faust skips them, and the loop gives
way to other tasks every ``yield_every`` events (benchmarks/bus_benchmark.py: a quarter less
CPU per record than Faust's iterator, and a few percent less again than an async generator).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust
from faust.agents.agent import current_agent
from faust.types import EventT


async def serve(
    stream: faust.StreamT,
    handle: Callable[[EventT], Awaitable[Any]],
    *,
    on_result: Callable[[Any], Awaitable[None]] | None = None,
    yield_every: int = 64,
) -> None:
    """Await ``handle(event)`` for every event of ``stream``, then ack it and pass its result to ``on_result``.

    Ends as Faust's iterator ends: when the channel stops the iteration (the agent stops).
    An event whose handling was interrupted (an exception, a cancel) is not acked, so its
    offset is not committed and it is read again after a restart (at least once); it is taken
    out of the consumer's unacked set, or a rebalance would wait for it forever. While
    ``handle`` runs, ``faust.current_event()`` is the event.
    """
    app, channel = stream.app, stream.channel
    queue = channel.queue
    flow_control, consumer = app.flow_control, app.consumer
    acking_topics = app.topics._acking_topics
    unacked = consumer._unacked_messages
    set_current_event = stream._set_current_event
    since_yield = 0
    started_here = await stream.maybe_start()
    event: Any = None
    try:
        while not stream.should_stop:
            if since_yield >= yield_every:
                since_yield = 0
                await asyncio.sleep(0)
            try:  # a stopping actor throws StopAsyncIteration into the queue: either get raises it
                try:
                    event = queue.get_nowait()
                except asyncio.QueueEmpty:
                    since_yield = 0
                    event = await channel.__anext__()
            except StopAsyncIteration:
                return
            since_yield += 1
            message = event.message
            if not flow_control.is_active() or message.generation_id != app.consumer_generation_id:
                event.ack()  # fetched before a rebalance: skipped and acked, as Faust's iterator does
                event = None
                continue
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                unacked.add(message)
            set_current_event(event)  # what faust.current_event() returns inside the stop
            result = await handle(event)
            event.ack()
            event = None
            set_current_event(None)
            if on_result is not None:
                await on_result(result)
    finally:
        if event is not None:
            unacked.discard(event.message)
            set_current_event(None)
        stream._channel_stop_iteration(channel)
        if started_here:
            await stream.stop()


async def serve_agent(stream: faust.StreamT, handle: Callable[[EventT], Awaitable[Any]]) -> AsyncIterator[Any]:
    """``serve`` as the body of a Faust agent; each result goes to the agent's sinks, if it has some.

    An async generator, so that Faust lets the agent have sinks, which yields nothing: Faust
    handles every yielded value (a debug log line, a reply check), about 4% of a stop's CPU
    for values nobody reads, so the results go to the sinks (Faust's test context adds one
    for ``agent.results``) from here, and only when the agent has sinks when it starts.
    """
    agent = current_agent()
    to_sinks = agent._delegate_to_sinks if agent is not None and agent._sinks else None
    await serve(stream, handle, on_result=to_sinks)
    return
    yield  # never reached
