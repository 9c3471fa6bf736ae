"""``intake.serve``: a stop's events and batches straight from its stream's queue, through Faust's test context."""

from __future__ import annotations

import asyncio

import faust
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.agents.agent import current_agent
from faust.types import TP

from metrobus_app.runtime.intake import Batch, Idleness, Inbox, inbox_of, serve, timestamp_ms


@pytest.fixture()
def app() -> faust.App:
    app = faust.App("unit-intake", store="memory://", value_serializer="raw")
    app.finalize()
    app.flow_control.resume()
    return app


async def test_an_event_is_acked_once_handled_and_its_result_goes_to_the_sinks(app: faust.App) -> None:
    handled: list[faust.types.EventT] = []

    async def handle(key: bytes | None, value: bytes | None, message: faust.types.Message) -> tuple:
        event = faust.current_event()
        previous = handled[-1] if handled else None
        handled.append(event)
        return (
            value,
            previous.message.acked if previous is not None else None,
            event.message.acked,
            event.message is message,
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

    async def handle(key: bytes | None, value: bytes | None, message: faust.types.Message) -> bytes | None:
        taken.append(faust.current_event())
        if value == b"bad":
            raise RuntimeError("the stop failed half-way")
        return value

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

    async def handle(key: bytes | None, value: bytes | None, message: faust.types.Message) -> None:
        seen.append(value)

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

    async def handle(key: bytes | None, value: bytes | None, message: faust.types.Message) -> None:
        seen.append(value)

    await asyncio.wait_for(serve(stream, handle), timeout=5)
    assert seen == []


def _records(tp: TP, offsets: range) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(tp.topic, tp.partition, offset, 1000 + offset, 0, b"k", f"v{offset}".encode(), None, 1, 3, [])
        for offset in offsets
    ]


async def _until(condition, seconds: float = 1.0) -> None:
    """Let the served tasks run until ``condition()`` holds, ``seconds`` at most (the asserts say what failed)."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)


async def _serve_in_background(app: faust.App, handle) -> tuple[faust.StreamT, asyncio.Task]:
    stream = app.channel().stream()
    task = asyncio.ensure_future(serve(stream, handle))
    await _until(lambda: inbox_of(stream.channel) is not None)
    return stream, task


async def _stop(stream: faust.StreamT, task: asyncio.Task) -> None:
    stream.channel._throw(StopAsyncIteration())
    await asyncio.wait_for(task, timeout=5)


async def test_a_batch_is_handled_in_order_and_its_offsets_acked_together(app: faust.App) -> None:
    tp = TP("Stop", 2)
    seen: list[tuple] = []

    async def handle(key: bytes | None, value: bytes | None, message: faust.types.Message) -> None:
        seen.append((key, value, timestamp_ms(message), list(app.consumer._acked.get(tp, ())), faust.current_event()))

    stream, task = await _serve_in_background(app, handle)
    inbox = inbox_of(stream.channel)
    await inbox.put(Batch(tp, _records(tp, range(10, 13)), app.consumer_generation_id))
    await _until(lambda: len(seen) == 3 and app.consumer._acked[tp])
    await _stop(stream, task)
    assert seen == [(b"k", b"v10", 1010, [], None), (b"k", b"v11", 1011, [], None), (b"k", b"v12", 1012, [], None)]
    assert app.consumer._acked[tp] == [10, 11, 12]
    # Under aiokafka's kind of partition, as Faust's messages have them: its transactional commit takes no other.
    assert all(type(key) is TopicPartition for key in app.consumer._acked)
    assert app.consumer._new_offset(tp) == 13
    assert inbox.waiting == 0
    assert inbox_of(stream.channel) is None  # the consumer no longer hands batches to a stopped agent


async def test_a_batch_stops_at_a_failed_record_and_acks_only_those_before(app: faust.App) -> None:
    tp = TP("Stop", 0)

    async def handle(key: bytes | None, value: bytes | None, message: faust.types.Message) -> None:
        if value == b"v2":
            raise RuntimeError("the stop failed half-way")

    stream = app.channel().stream()
    await stream.channel.put(Batch(tp, _records(tp, range(0, 4)), app.consumer_generation_id))
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(serve(stream, handle), timeout=5)
    assert app.consumer._acked[tp] == [0, 1]


async def test_a_batch_from_before_a_rebalance_is_neither_handled_nor_acked(app: faust.App) -> None:
    tp = TP("Stop", 1)
    seen: list[int] = []

    async def handle(key: bytes | None, value: bytes | None, message: faust.types.Message) -> None:
        seen.append(message.offset)
        if message.offset == 5:
            app.consumer_generation_id += 1  # a rebalance while the batch is being handled

    stream, task = await _serve_in_background(app, handle)
    old = app.consumer_generation_id - 1
    await stream.channel.put(Batch(tp, _records(tp, range(0, 3)), old))
    await stream.channel.put(Batch(tp, _records(tp, range(4, 8)), app.consumer_generation_id))
    await _until(lambda: seen)
    await asyncio.sleep(0.05)
    await _stop(stream, task)
    assert seen == [4, 5]  # none of the stale batch; the live one until the rebalance came
    assert app.consumer._acked[tp] == []  # read again from the committed offset, by whoever owns it now


async def test_a_batch_stops_when_flow_control_suspends_for_a_rebalance(app: faust.App) -> None:
    tp = TP("Stop", 2)
    seen: list[int] = []

    async def handle(key: bytes | None, value: bytes | None, message: faust.types.Message) -> None:
        seen.append(message.offset)
        if message.offset == 1:
            app.flow_control.suspend()  # what Faust does when a rebalance begins

    stream, task = await _serve_in_background(app, handle)
    await stream.channel.put(Batch(tp, _records(tp, range(0, 4)), app.consumer_generation_id))
    try:
        await _until(lambda: len(seen) >= 2)
        await asyncio.sleep(0.05)
        await _stop(stream, task)
    finally:
        app.flow_control.resume()
    assert seen == [0, 1]  # the records after the suspension are left to be read again
    assert app.consumer._acked[tp] == []


async def test_an_inbox_pauses_a_partition_above_its_limit_and_resumes_it_below_half(app: faust.App) -> None:
    tp = TP("Stop", 3)
    consumer = app.consumer
    consumer._active_partitions = {tp}
    inbox = Inbox(app, asyncio.Queue())
    inbox.limit = 10
    await inbox.put(Batch(tp, _records(tp, range(0, 6)), 0))
    assert tp in consumer._active_partitions
    await inbox.put(Batch(tp, _records(tp, range(6, 12)), 0))
    assert tp not in consumer._active_partitions and tp in consumer._buffered_partitions
    inbox.taken(inbox.queue.get_nowait())
    assert tp not in consumer._active_partitions  # 6 still wait: above half the limit
    inbox.taken(inbox.queue.get_nowait())
    assert tp in consumer._active_partitions and tp not in consumer._buffered_partitions


async def test_an_inbox_counts_nothing_waiting_once_its_queue_was_cleared(app: faust.App) -> None:
    tp = TP("Stop", 3)
    app.consumer._active_partitions = {tp}
    stream = app.channel().stream()
    inbox = Inbox(app, stream.channel.queue)
    inbox.limit = 10
    await inbox.put(Batch(tp, _records(tp, range(0, 8)), 0))
    app.flow_control.resume()  # what a rebalance ends with: Faust clears the streams' queues
    assert stream.channel.queue.empty()
    await inbox.put(Batch(tp, _records(tp, range(8, 12)), 0))
    assert inbox.waiting == 4
    assert tp in app.consumer._active_partitions  # not paused for records that no longer wait


async def test_the_actors_of_one_agent_share_their_channels_inbox(app: faust.App) -> None:
    tp = TP("Stop", 0)
    seen: list[int] = []

    async def handle(key: bytes | None, value: bytes | None, message: faust.types.Message) -> None:
        seen.append(message.offset)

    stream = app.channel().stream()
    actors = [asyncio.ensure_future(serve(stream, handle)) for _ in range(2)]
    await _until(lambda: inbox_of(stream.channel) is not None and inbox_of(stream.channel).readers == 2)
    inbox = inbox_of(stream.channel)
    await inbox.put(Batch(tp, _records(tp, range(0, 3)), app.consumer_generation_id))
    await inbox.put(Batch(tp, _records(tp, range(3, 6)), app.consumer_generation_id))
    await _until(lambda: len(seen) == 6)
    assert sorted(seen) == list(range(6)) and inbox.waiting == 0
    stream.channel._throw(StopAsyncIteration())
    await asyncio.wait(actors, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert inbox_of(stream.channel) is inbox  # one actor still reads it
    stream.channel._throw(StopAsyncIteration())
    await asyncio.wait_for(asyncio.gather(*actors), timeout=5)
    assert inbox_of(stream.channel) is None


async def test_the_worker_is_idle_when_every_serve_loop_waits_for_records(app: faust.App) -> None:
    idleness, idle_at = Idleness(), []
    seen: list[int] = []
    idleness.when_all_wait = lambda: idle_at.append(list(seen))

    async def handle(key: bytes | None, value: bytes | None, message: faust.types.Message) -> None:
        seen.append(message.offset)
        await asyncio.sleep(0.01)  # while one loop is busy, the other waits: not idle yet

    tp = TP("Stop", 0)
    streams = [app.channel().stream(), app.channel().stream()]
    tasks = [asyncio.ensure_future(serve(stream, handle, idleness=idleness)) for stream in streams]
    await _until(lambda: idleness.waiting == 2)
    assert idleness.loops == 2 and idle_at == [[], []]  # each loop found nothing as it started
    await streams[0].channel.put(Batch(tp, _records(tp, range(0, 3)), app.consumer_generation_id))
    await streams[1].channel.put(Batch(tp, _records(tp, range(10, 12)), app.consumer_generation_id))
    await _until(lambda: len(idle_at) == 3)
    await asyncio.sleep(0.05)
    assert len(idle_at) == 3 and len(idle_at[2]) == 5  # idle again once, when both loops were done
    for stream, task in zip(streams, tasks, strict=True):
        await _stop(stream, task)
    assert idleness.loops == 0 and idleness.waiting == 0
