"""Faust's aiokafka transport with the fetch wait as a setting instead of a fixed 1500 ms.

A consumer's fetch waits up to ``fetch_max_wait_ms`` for data; on a bus every hop pays
that wait, so it bounds the end-to-end latency (DESIGN.md measured ~1 s a hop with 1500).
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

from .delivery import TransactionManager, guard_of


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Consumer thread whose worker consumer waits ``METROBUS_FETCH_WAIT_MS`` at most."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when it builds its fetcher at start().
        consumer._fetch_max_wait_ms = self.app.settings.fetch_wait_ms
        return consumer


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer running our consumer thread, its commits gated (see ``delivery.py``)."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        # Hand what is queued in memory (e.g. fates) to the producer, so the flush that
        # Faust does before committing covers it.
        guard = guard_of(self.app)
        if guard is not None:
            await guard.run_hooks()
        return await super()._commit_offsets(offsets, start_new_transaction)

    async def _commit(self, offsets: Any) -> bool:
        # Faust has flushed the producer; a send that failed means: commit nothing.
        guard = guard_of(self.app)
        if guard is not None and not guard.may_commit():
            return False
        return await super()._commit(offsets)


class Transport(faust_aiokafka.Transport):
    """Kafka transport of metrobus workers."""

    Consumer: ClassVar[Any] = Consumer
    TransactionManager: ClassVar[Any] = TransactionManager
