"""``intake.events``: a stop's events straight from its stream's queue, through Faust's test context."""

from __future__ import annotations

import asyncio

import faust
import pytest

from metrobus_app.intake import events


@pytest.fixture()
def app() -> faust.App:
    app = faust.App("unit-intake", store="memory://", value_serializer="raw")
    app.finalize()
    app.flow_control.resume()
    return app


async def test_an_event_is_acked_once_the_next_one_is_asked_for(app: faust.App) -> None:
    @app.agent()
    async def agent(stream: faust.StreamT):
        previous = None
        async for event in events(stream):
            yield (
                event.value,
                previous.message.acked if previous is not None else None,
                event.message.acked,
                faust.current_event() is event,
            )
            previous = event

    async with agent.test_context() as tested:
        for value in (b"a", b"b", b"c"):
            await tested.put(value)
        seen = [tested.results[n] for n in range(3)]
    # Each event is handled unacked, as the event of faust.current_event(); the one before is acked by then.
    assert seen == [(b"a", None, False, True), (b"b", True, False, True), (b"c", True, False, True)]


async def test_an_event_whose_handling_failed_is_not_acked(app: faust.App) -> None:
    taken: list[faust.types.EventT] = []

    @app.agent()
    async def agent(stream: faust.StreamT):
        async for event in events(stream):
            taken.append(event)
            if event.value == b"bad":
                raise RuntimeError("the stop failed half-way")
            yield event.value

    async with agent.test_context() as tested:
        await tested.put(b"good")
        with pytest.raises(RuntimeError):
            await tested.put(b"bad")
    assert [event.message.acked for event in taken] == [True, False]


async def test_the_events_end_quietly_when_the_actor_stops_the_channel(app: faust.App) -> None:
    # A stopping Faust actor throws StopAsyncIteration into its channel (faust/agents/actor.py).
    stream = app.channel().stream()
    seen: list[bytes] = []

    async def consume() -> None:
        async for event in events(stream):
            seen.append(event.value)

    task = asyncio.ensure_future(consume())
    await stream.channel.send(value=b"one")
    await asyncio.sleep(0.05)
    stream.channel._throw(StopAsyncIteration())
    await asyncio.wait_for(task, timeout=5)  # raises RuntimeError if StopAsyncIteration escaped the generator
    assert seen == [b"one"]


async def test_the_events_end_quietly_when_the_stop_is_thrown_while_events_wait(app: faust.App) -> None:
    stream = app.channel().stream()
    for value in (b"one", b"two"):
        await stream.channel.send(value=value)
    stream.channel._throw(StopAsyncIteration())  # thrown errors come out before queued events
    seen = [event.value async for event in events(stream)]
    assert seen == []
