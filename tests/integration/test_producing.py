"""The bus's own batches, against the real broker: nothing lost, each key's order kept, errors said."""

from __future__ import annotations

import asyncio
import os
import random
import signal

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner
from faust.exceptions import ProducerSendError

from metrobus_app.runtime.producing import BatchingSend, send_for
from metrobus_app.runtime.transport import Transport

TOPIC = "Batched"


async def started_producer(broker, **settings):
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, 4, 1)])
    await admin.close()
    app = TransportApp("metrobus-test-batches", broker=broker.url, producer_linger=0.005, **settings)
    await app.producer.start()
    return app


class TransportApp(faust.App):
    """A plain Faust app on the metrobus transport (whose producer's flush hands the batches over)."""

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)


async def read_all(broker, expect: int) -> list:
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=broker.bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    records: list = []
    try:
        for _ in range(100):
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
            if len(records) >= expect:
                await asyncio.sleep(1)  # anything beyond the expected would show up too
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    records.extend(batch)
                return records
        return records
    finally:
        await consumer.stop()


async def test_two_senders_and_commits_lose_nothing_and_keep_each_keys_order(broker):
    app = await started_producer(broker)
    futures: list[asyncio.Future] = []
    send, batching = send_for(app, app.producer, futures.append)
    assert isinstance(batching, BatchingSend)
    produced: list[bytes] = []
    app.on_produce_message.connect(lambda sender, key, **_: produced.append(key))  # as Faust's send tells it
    await app.producer._ensure_producer().send_and_wait(TOPIC, b"first", key=b"metadata")  # partitions known
    rng, n = random.Random(7), 6000
    keys = [str(rng.randrange(300)).encode() for _ in range(n)]

    offered = 0

    async def sender(first: int) -> None:
        nonlocal offered
        for i in range(first, n, 2):
            value = b'{"i": %d}' % i + b" " * rng.randrange(600)
            if first == 1 and batching.offer(TOPIC, keys[i], value):  # as Bus.forward: no coroutine when it fits
                offered += 1
            else:
                await send(TOPIC, keys[i], value)
            if i % 40 == 0:
                await asyncio.sleep(0)

    async def committer() -> None:  # what DeliveryGuard's hook does before each commit
        for _ in range(30):
            await asyncio.sleep(0.005)
            await batching.ship()

    await asyncio.gather(sender(0), sender(1), committer())
    assert 0 < offered < n // 2  # most offers fit; one that finds its batch full goes by the awaited send
    big = b'{"i": %d}' % n + b" " * 20_000  # above a batch: goes by aiokafka's send
    assert await send(TOPIC, keys[0], big) is not None
    await batching.ship()
    batching.linger_s = 60.0
    assert await send(TOPIC, b"last", b'{"i": %d}' % (n + 1)) is None  # in a batch for a minute, or until ...
    handed_over = batching.batches
    app.producer.batching = batching  # (what delivery.install does)
    await app.producer.flush()  # ... the flush Faust makes before each commit
    assert batching.batches == handed_over + 1 and not batching._open
    assert batching.batches > 10 and all(future.done() and not future.exception() for future in futures)
    assert sorted(produced) == sorted([*keys, keys[0], b"last"])

    records = [r for r in await read_all(broker, n + 3) if r.key != b"metadata"]
    numbers = [int(r.value.split(b"}")[0].split(b":")[1]) for r in records]
    assert sorted(numbers) == list(range(n + 2))
    partitioner, partitions = DefaultPartitioner(), [0, 1, 2, 3]
    by_key: dict[bytes, list[int]] = {}
    for record, number in zip(records, numbers, strict=True):
        assert record.partition == partitioner(record.key, partitions, partitions)
        by_key.setdefault(record.key, []).append(number)
    # Each sender's records of a key in the order it sent them (the two senders interleave).
    for sequence in by_key.values():
        for parity in (0, 1):
            mine = [number for number in sequence if number % 2 == parity and number < n]
            assert mine == sorted(mine)
    await app.producer.stop()


async def test_what_an_offer_leaves_to_the_send_an_early_ship_and_what_the_broker_refuses(broker):
    app = await started_producer(broker, producer_max_request_size=50_000)
    futures: list[asyncio.Future] = []
    send, batching = send_for(app, app.producer, futures.append)
    batching.linger_s = 60.0  # a batch goes when shipped, not by itself
    await app.producer._ensure_producer().send_and_wait(TOPIC, b"first", key=b"metadata")
    with pytest.raises(ProducerSendError) as refused:
        await send(TOPIC, b"k", b"x" * 60_000)
    assert type(refused.value.__cause__).__name__ == "MessageSizeTooLargeError"
    assert await send(TOPIC, b"k", b"small") is None  # in a batch
    # What the awaited send must take instead: no key, a topic whose partitions are not known, too large.
    assert not batching.offer(TOPIC, None, b"v")
    assert not batching.offer("NotKnownYet", b"k", b"v")
    assert not batching.offer(TOPIC, b"k", b"x" * 60_000)
    assert batching.offer(TOPIC, b"k", b"small")
    assert not futures
    batching.ship_soon()  # what the bus does when every stop of the worker waits: no linger
    for _ in range(100):
        if futures:
            break
        await asyncio.sleep(0.01)
    assert len(futures) == 1 and not batching._open
    assert (await futures[0]) is not None  # taken by the broker
    assert await send(TOPIC, b"k", b"small") is None  # a new batch
    await app.producer.stop()  # the batch has nowhere to go now
    await batching.ship()
    assert len(futures) == 2 and isinstance(futures[1].exception(), ProducerSendError)


async def test_a_flush_waits_for_a_batch_still_being_handed_over_by_another_task(broker):
    # aiokafka holds a batch back while the previous batch of its partition waits to go out;
    # a commit's flush meanwhile must wait for it as well, or the commit covers unsent records.
    app = await started_producer(broker)
    futures: list[asyncio.Future] = []
    _, batching = send_for(app, app.producer, futures.append)
    app.producer.batching = batching  # (what delivery.install does)
    batching.linger_s = 60.0
    await app.producer._ensure_producer().send_and_wait(TOPIC, b"first", key=b"k")
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        assert batching.offer(TOPIC, b"k", b"0")
        await batching.ship()  # sent: the broker does not answer
        await asyncio.sleep(0.2)
        assert batching.offer(TOPIC, b"k", b"1")
        await batching.ship()  # with aiokafka, behind the one in flight
        assert batching.offer(TOPIC, b"k", b"2")
        batching.ship_soon()  # a task takes it: aiokafka holds it until the one before goes out
        await asyncio.sleep(0.2)
        assert not batching._open and len(futures) == 2, "the third batch should be half handed over"
        flush = asyncio.ensure_future(app.producer.flush())
        await asyncio.sleep(0.2)
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    await asyncio.wait_for(flush, 30)
    assert len(futures) == 3 and all(future.done() and not future.exception() for future in futures)
    assert [r.value for r in await read_all(broker, 4)] == [b"first", b"0", b"1", b"2"]
    await app.producer.stop()
