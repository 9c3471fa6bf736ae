"""Sends of an at-least-once worker, gathered into aiokafka batches by the bus itself.

Per record, Faust's ``Producer.send`` and aiokafka's ``send`` cost a wrapper, two lists of the
topic's partitions, a murmur2 hash of the key in pure Python, a delivery future and its
callbacks. ``BatchingSend`` appends each record to an open batch of its partition
(aiokafka's ``create_batch``) and hands the batch over whole (``send_batch``) when it is
full, ``linger_s`` after it was opened, or when ``ship`` is called (before every offset
commit, ``runtime/delivery.py``): one future per batch. ``offer`` does it without a coroutine when the
record fits an open batch (or opens one), which is most records. The partition is Kafka's default
(``murmur2(key) & 0x7fffffff`` modulo the partition count, what aiokafka, kafka-python and
the Java client compute); a message keeps its key on every hop, so a key is hashed once.

Records without a key, for a topic whose partitions the producer does not know yet, or
larger than a batch, go through aiokafka's ``send`` (which also refuses one above
``max_request_size`` at once). Batches are handed over one at a time, in the order they were
closed (one waits while aiokafka still holds the previous batch of its partition), so
the records of a partition keep their order. Kept from Faust's send: the
``app.on_produce_message`` signal (sent when something listens to it) and ``ProducerSendError``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import murmur2
from faust.exceptions import ProducerSendError
from faust.types.enums import ProcessingGuarantee

# A send returns the delivery future of its record, or None when the record went into a
# batch (whose future goes to the ``on_batch`` callback once the batch is handed over).
Send = Callable[[str, bytes | None, bytes | None], Awaitable[asyncio.Future | None]]


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


def crc32_partition(key: bytes, count: int) -> int:
    """A partition for keys seen once (message ids): as stable as murmur2 across workers, in C."""
    return zlib.crc32(key) % count


class BatchingSend:
    """The send of one worker (see the module docstring); ``ship`` hands every open batch over."""

    def __init__(
        self,
        producer: Any,
        on_produce: Any,
        on_batch: Callable[[asyncio.Future], None],
        *,
        linger_s: float,
        batch_bytes: int,
    ) -> None:
        self._ensure = producer._ensure_producer  # Faust's: aiokafka's producer, once started
        self._on_produce = on_produce
        self._on_batch = on_batch
        self.linger_s = linger_s
        self.batch_bytes = batch_bytes
        self._hashes = KeyHashes()
        self._counted_by: Any = None  # the aiokafka producer whose metadata ``_counts`` reflects
        self._counts: dict[str, int] = {}
        # topic -> fn(key, partition count): a partition other than Kafka's default for that topic
        self.partition_by: dict[str, Callable[[bytes, int], int]] = {}
        self._open: dict[tuple[str, int], Any] = {}
        self._lingering: asyncio.TimerHandle | None = None
        self._handing_over = asyncio.Lock()  # FIFO: batches reach aiokafka in the order they were closed
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0

    def offer(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> bool:
        """Append a record to its partition's open batch (opening one) without waiting.

        False when the record needs the awaited send (``__call__``): no key, a partition count
        not known yet, a record as large as a batch, a full open batch, or anything that went
        wrong (the awaited send then raises it). Most forwards go this way: no coroutine.
        """
        if key is None or value is None or len(value) >= self.batch_bytes:
            return False
        try:
            aio = self._ensure()
            count = self._partition_count(aio, topic)
            if not count:
                return False
            partition = self.partition_by.get(topic, self._hashes.partition)(key, count)
            tp = (topic, partition)
            batch = self._open.get(tp)
            if batch is None:
                batch = self._open_batch(aio, tp)
            appended = (
                batch.append(key=key, value=value, timestamp=None)
                if headers is None
                else batch.append(key=key, value=value, timestamp=None, headers=headers)
            )
            if appended is None:
                return False
        except Exception:
            return False
        self._told(key, value, partition)
        return True

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> asyncio.Future | None:
        if self.offer(topic, key, value, headers):
            return None
        aio = self._ensure()
        count = self._partition_count(aio, topic) if key is not None else 0
        partition = self.partition_by.get(topic, self._hashes.partition)(key, count) if count else None  # type: ignore[arg-type]
        self._told(key, value, partition)
        if partition is None or value is None or len(value) >= self.batch_bytes:
            if partition is not None and (topic, partition) in self._open:
                await self._hand_over([((topic, partition), self._open.pop((topic, partition)))])
            return await _aiokafka_send(aio, topic, key, value, partition, headers)
        tp = (topic, partition)
        while (batch := self._open.get(tp)) is not None:
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is not None:
                return None  # (the awaited way: not the hot path)
            del self._open[tp]  # full; while it is handed over, another sender may open the next one
            await self._hand_over([(tp, batch)])
        self._open_batch(aio, tp).append(key=key, value=value, timestamp=None, headers=headers or [])  # always fits
        return None

    def _told(self, key: bytes | None, value: bytes | None, partition: int | None) -> None:
        on_produce = self._on_produce
        if on_produce._receivers or on_produce._filter_receivers:  # a signal nobody listens to costs nothing
            on_produce.send(key=key, value=value, partition=partition, timestamp=None, headers=None)

    def _open_batch(self, aio: Any, tp: tuple[str, int]) -> Any:
        batch = self._open[tp] = aio.create_batch()
        if self._lingering is None:
            self._lingering = asyncio.get_running_loop().call_later(self.linger_s, self._linger_over)
        return batch

    def _partition_count(self, aio: Any, topic: str) -> int:
        """How many partitions ``topic`` has (0: not known yet), from the producer's metadata.

        Remembered until the metadata changes: aiokafka builds a set of them on every call.
        """
        if aio is not self._counted_by:
            self._counted_by, self._counts = aio, {}
            aio._metadata.add_listener(lambda _: self._counts.clear())
        count = self._counts.get(topic)
        if count is None:
            count = len(aio._metadata.partitions_for_topic(topic) or ())
            if count:
                self._counts[topic] = count
        return count

    async def ship(self) -> None:
        """Hand every open batch to aiokafka's producer, after the hand-overs already under way.

        Then aiokafka's flush covers every record offered before: a batch that a linger task
        or a sender took from ``_open`` is in nobody's flush until its hand-over is done, and
        aiokafka holds a hand-over back while the partition's previous batch waits to go (a
        commit that did not wait for it lost those records in a kill -9 on a loaded machine).
        """
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
        batches, self._open = list(self._open.items()), {}
        await self._hand_over(batches)

    def ship_soon(self) -> None:
        """Hand the open batches over now rather than when the linger is over (in a task of their own)."""
        if self._lingering is not None:
            self._lingering.cancel()
            self._linger_over()

    def _linger_over(self) -> None:
        self._lingering = None
        task = asyncio.ensure_future(self.ship())
        self._tasks.add(task)  # a reference, or the loop may drop the task half way
        task.add_done_callback(self._tasks.discard)

    async def _hand_over(self, batches: list[tuple[tuple[str, int], Any]]) -> None:
        """Give each batch to aiokafka, once the batches given before are with it.

        A batch aiokafka refuses becomes a failed future for ``on_batch``.
        """
        async with self._handing_over:
            for (topic, partition), batch in batches:
                batch.close()  # ready to go: aiokafka adds nothing to it and does not linger on it
                try:
                    future = await self._ensure().send_batch(batch, topic, partition=partition)
                except Exception as exc:
                    future = asyncio.get_running_loop().create_future()
                    future.set_exception(ProducerSendError(f"Error while sending a batch to {topic}: {exc!r}"))
                self.batches += 1
                self._on_batch(future)


async def _aiokafka_send(
    aio: Any,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    partition: int | None,
    headers: list[tuple[str, bytes]] | None = None,
) -> Any:
    try:
        return await aio.send(topic, value, key=key, partition=partition, headers=headers)
    except KafkaError as exc:
        raise ProducerSendError(f"Error while sending: {exc!r}") from exc


def send_for(app: Any, producer: Any, on_batch: Callable[[asyncio.Future], None]) -> tuple[Send, BatchingSend | None]:
    """The send of ``producer`` (Faust's): a ``BatchingSend`` where it may be used, else Faust's own.

    Faust's own in exactly-once mode (``producer`` is then Faust's transaction manager), for
    an app with its own ``producer_partitioner`` and for a transport other than aiokafka.
    """
    conf = app.conf
    transactional = conf.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE
    if transactional or conf.producer_partitioner is not None or not hasattr(producer, "_ensure_producer"):
        return partial(_faust_send, producer), None
    batching = BatchingSend(
        producer,
        app.on_produce_message,
        on_batch,
        linger_s=conf.producer_linger,
        batch_bytes=conf.producer_max_batch_size,
    )
    return batching, batching


async def _faust_send(
    producer: Any, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
) -> asyncio.Future:
    return await producer.send(topic, key, value, None, None, headers)


def too_large(exc: BaseException) -> bool:
    """True when a send failed because the message is above the producer's or broker's size limit."""
    return isinstance(exc, MessageSizeTooLargeError) or isinstance(exc.__cause__, MessageSizeTooLargeError)
