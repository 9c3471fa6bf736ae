"""Sends of an at-least-once worker straight to aiokafka's producer, a key's partition worked out once.

Faust's ``Producer.send`` and aiokafka's partitioner cost, per record, a wrapper call and
two lists of the topic's partitions plus a murmur2 hash of the key in pure Python. A message
keeps its key on every hop, so the bus hashes a key once and reuses the partition number
for each topic (Kafka's default partitioner: ``murmur2(key) & 0x7fffffff`` modulo the
partition count, what aiokafka, kafka-python and the Java client compute). What Faust's
send does besides is kept: the ``app.on_produce_message`` signal and ``ProducerSendError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from faust.exceptions import ProducerSendError
from faust.types.enums import ProcessingGuarantee

Send = Callable[[str, bytes | None, bytes | None], Awaitable[asyncio.Future]]


class KeyHashes:
    """``murmur2(key) & 0x7fffffff`` per key, remembered for the last ``max_keys`` or so keys."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._hashes: dict[bytes, int] = {}

    def partition(self, key: bytes, count: int) -> int:
        """The partition of ``key`` among ``count`` partitions, as Kafka's default partitioner picks it."""
        hashes = self._hashes
        value = hashes.get(key)
        if value is None:
            if len(hashes) >= self.max_keys:
                hashes.clear()
            value = hashes[key] = murmur2(key) & 0x7FFFFFFF
        return value % count


def send_for(app: Any, producer: Any) -> Send:
    """``direct_send`` where it may be used, else Faust's send of ``producer``."""
    return direct_send(app, producer) or partial(_faust_send, producer)


async def _faust_send(producer: Any, topic: str, key: bytes | None, value: bytes | None) -> asyncio.Future:
    return await producer.send(topic, key, value, None, None, None)


def direct_send(app: Any, producer: Any) -> Send | None:
    """A send to aiokafka's producer for ``producer`` (Faust's), or None where only Faust's own will do.

    None in exactly-once mode (``producer`` is then Faust's transaction manager), for an
    app with its own ``producer_partitioner`` and for a transport other than aiokafka. A
    record without a key, or for a topic whose partitions the producer does not know yet, is
    left to aiokafka's partitioner.
    """
    transactional = app.conf.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE
    if transactional or app.conf.producer_partitioner is not None or not hasattr(producer, "_ensure_producer"):
        return None
    ensure, on_produce = producer._ensure_producer, app.on_produce_message.send
    hashes = KeyHashes()

    async def send(topic: str, key: bytes | None, value: bytes | None) -> asyncio.Future:
        aio = ensure()
        partition = None
        if key is not None:
            partitions = aio._metadata.partitions_for_topic(topic)
            if partitions:
                partition = hashes.partition(key, len(partitions))
        on_produce(key=key, value=value, partition=partition, timestamp=None, headers=None)
        try:
            return await aio.send(topic, value, key=key, partition=partition)
        except KafkaError as exc:
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc

    return send
