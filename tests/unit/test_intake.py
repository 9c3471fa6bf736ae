"""``intake.serve``: a stop's events straight from its stream's queue, through Faust's test context."""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.agents.agent import current_agent

from metrobus_app.intake import serve


@pytest.fixture()
def app() -> faust.App:
    app = faust.App("unit-intake", store="memory://", value_serializer="raw")
    app.finalize()
    app.flow_control.resume()
    return app


async def test_an_event_is_acked_once_handled_and_its_result_goes_to_the_sinks(app: faust.App) -> None:
    handled: list[faust.types.EventT] = []

    async def handle(event: faust.types.EventT) -> tuple:
        previous = handled[-1] if handled else None
        handled.append(event)
        return (
            event.value,
            previous.message.acked if previous is not None else None,
            event.message.acked,
            faust.current_event() is event,
        )

    @app.agent()
    async def agent(stream: faust.StreamT):
        await serve(stream, handle, on_result=current_agent()._delegate_to_sinks)
        return
        yield

    async with agent.test_context() as tested:
        for value in (b"a", b"b", b"c"):
            await tested.put(value)
        seen = [tested.results[n] for n in range(3)]
    # Each event is handled unacked, as the event of faust.current_event(); the one before is acked by then.
    assert seen == [(b"a", None, False, True), (b"b", True, False, True), (b"c", True, False, True)]
    assert all(event.message.acked for event in handled)


async def test_an_event_whose_handling_failed_is_not_acked(app: faust.App) -> None:
    taken: list[faust.types.EventT] = []

    async def handle(event: faust.types.EventT) -> bytes:
        taken.append(event)
        if event.value == b"bad":
            raise RuntimeError("the stop failed half-way")
        return event.value

    @app.agent()
    async def agent(stream: faust.StreamT):
        await serve(stream, handle, on_result=current_agent()._delegate_to_sinks)
        return
        yield

    async with agent.test_context() as tested:
        await tested.put(b"good")
        with pytest.raises(RuntimeError):
            await tested.put(b"bad")
    assert [event.message.acked for event in taken] == [True, False]
    assert taken[1].message not in app.consumer._unacked_messages


async def test_serving_ends_quietly_when_the_actor_stops_the_channel(app: faust.App) -> None:
    # A stopping Faust actor throws StopAsyncIteration into its channel (faust/agents/actor.py).
    stream = app.channel().stream()
    seen: list[bytes] = []

    async def handle(event: faust.types.EventT) -> None:
        seen.append(event.value)

    task = asyncio.ensure_future(serve(stream, handle))
    await stream.channel.send(value=b"one")
    await asyncio.sleep(0.05)
    stream.channel._throw(StopAsyncIteration())
    await asyncio.wait_for(task, timeout=5)  # raises if StopAsyncIteration escaped
    assert seen == [b"one"]


async def test_serving_ends_quietly_when_the_stop_is_thrown_while_events_wait(app: faust.App) -> None:
    stream = app.channel().stream()
    for value in (b"one", b"two"):
        await stream.channel.send(value=value)
    stream.channel._throw(StopAsyncIteration())  # thrown errors come out before queued events
    seen: list[bytes] = []

    async def handle(event: faust.types.EventT) -> None:
        seen.append(event.value)

    await asyncio.wait_for(serve(stream, handle), timeout=5)
    assert seen == []
