"""Faust's aiokafka transport, tuned for a bus whose every hop goes through the broker.

- The fetch wait is a setting instead of a fixed 1500 ms: a consumer's fetch waits up to
  ``fetch_max_wait_ms`` for data; every hop pays that wait, so it bounds the end-to-end
  latency (DESIGN.md measured ~1 s a hop with 1500).
- The consumer's per-record work is done per fetched batch where Faust does it per record
  (``Consumer``); its commits are gated by ``delivery.DeliveryGuard``.
- The producer's flush hands over the bus's own batches first (``Producer``, ``runtime/producing.py``),
  and it is idempotent (``clients.producer_options``).
- A topic it creates is waited for until every partition has a leader (``Transport``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

import aiokafka
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

from metrobus_app.runtime.broker_health import fetch_wait_ms
from metrobus_app.runtime.clients import producer_options
from metrobus_app.runtime.compat import ready_for_producer_ids
from metrobus_app.runtime.delivery import TransactionManager, guard_of
from metrobus_app.runtime.intake import Batch, Inbox, inbox_of
from metrobus_app.runtime.producing import BatchingSend
from metrobus_app.runtime.raw_schema import RawSchema
from metrobus_app.runtime.seams import in_transaction
from metrobus_app.runtime.transactions import gate_of

if TYPE_CHECKING:
    # What ``app.topics`` is in a worker: Faust's ConductorT leaves out the internals read here.
    from faust.transport.conductor import Conductor


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Consumer thread whose fetch waits as long as suits the broker (``broker_health.fetch_wait_ms``)."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when it builds its fetcher at start().
        # The app knows its broker once it answered (MetrobusApp.on_first_start); a test app never asks.
        app = self.app
        settings = app.settings  # type: ignore[attr-defined]  # MetrobusApp's; Faust's AppT has none
        consumer._fetch_max_wait_ms = getattr(app, "fetch_wait_ms", None) or fetch_wait_ms(settings, "tansu")
        return consumer


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer running our consumer thread, its commits gated (see ``runtime/delivery.py``)."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Faust's commit, never cut in half by a cancel (the fetcher's, at a stop or a rebalance).

        A commit cancelled between a transaction's commit and the next one's begin left that
        producer outside any transaction: the stop's last commit then raised ``IllegalOperation``
        and the worker hung with its consumer still in the group.
        """
        return await asyncio.shield(super().commit(topics, start_new_transaction))

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Faust's; exactly once: only between records, none after a stop's last (``runtime/transactions.py``)."""
        gate = gate_of(self.app)
        if gate is None:
            return await super().force_commit(topics, start_new_transaction)
        if gate.ended or not await gate.close_and_drain():
            return False
        try:
            return await super().force_commit(topics, start_new_transaction)
        finally:
            gate.ended = gate.ended or not start_new_transaction
            gate.reopen()

    async def on_stop(self) -> None:
        """Faust's last commit, then the children stop (leaving the group) whatever it raised.

        In exactly-once mode a transaction not committed by then is aborted, so its records are
        read again by the next owner and ``read_committed`` readers need not wait for its timeout.
        """
        try:
            await super().on_stop()
        except Exception as exc:
            self.log.error("the last commit failed (%s: %s); stopping without it", type(exc).__name__, exc)
        if self.in_transaction:
            await cast(Producer, self.app.producer).abort_open_transactions()

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        # Hand what is queued in memory (e.g. fates) to the producer, so the flush that
        # Faust does before committing covers it.
        guard = guard_of(self.app)
        if guard is not None:
            await guard.run_hooks()
        return await super()._commit_offsets(offsets, start_new_transaction)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs in every worker
        """Faust's fetch loop, with the flow-suspension race set up once per batch, not per message.

        Faust wraps the delivery of *each* record in ``wait_first(deliver, suspend_flow.wait())``:
        four futures and an ``asyncio.wait`` per message (8% of a stop's CPU per record by
        benchmarks/bus_benchmark.py: 1.09 -> 1.00 ms). Here a whole fetched batch is delivered inside
        one such race, so a rebalance still interrupts delivery, and a record of a batch is only
        delivered while the flow is active.
        """
        should_stop, fetcher_should_stop = self._stopped.is_set, fetcher._stopped.is_set
        try:
            while not (should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                batches, messages = await self._fetch_batch(1.0)
                await asyncio.sleep(0)
                if (batches or messages) and not self.should_stop:
                    await self.wait_first(self._deliver(batches, messages), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _fetch_batch(self, wait_s: float) -> tuple[dict[Any, tuple[Inbox, list[Any]]], list[tuple[Any, Any]]]:
        """What Faust's ``getmany`` yields, as lists, with a partition's end offset noted once, not per record.

        First, per partition whose only reader is an agent served by ``intake.serve``, its
        inbox and aiokafka's records as they came (``intake.Batch``); then every other record
        as Faust's message, in Faust's round-robin order. ``_drain_messages`` always took the
        whole fetch before delivering any of it; the flow and the generation are checked again
        at delivery.
        """
        records, active_partitions = await self._wait_next_records(wait_s)
        if records is None or self.should_stop:
            return {}, []
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as exc:
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return {}, []
        track, buffered = self.app.monitor.track_tp_end_offset, self._buffered_partitions
        changing = cast("Conductor", self.app.topics)._tp_to_callback_lock.locked()
        batches, rest = {}, {}
        for tp, taken in records.items():
            if active_partitions is None or tp in active_partitions or tp in buffered:
                track(tp, self.highwater(tp))
                inbox = None if changing else self._inbox(tp)
                if inbox is not None:
                    batches[tp] = (inbox, taken)
                else:
                    rest[tp] = taken
        to_message = self._to_message
        return batches, [(tp, to_message(tp, record)) for tp, record in self.scheduler.iterate(rest)] if rest else []

    async def _deliver(self, batches: dict[Any, tuple[Inbox, list[Any]]], messages: list[tuple[Any, Any]]) -> None:
        """Hand fetched records to the agents, in order per partition, as Faust's loop does (gaps, commit_every).

        ``batches`` go to their inboxes whole. Any other record goes straight to the callback
        of its partition, unless the conductor is changing its callbacks (then through its
        ``on_message``, which waits for that): Faust's ``on_message`` takes a lock for every record.
        """
        read_offsets, generation = self._read_offset, self.app.consumer_generation_id
        for tp, (inbox, records) in batches.items():
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return
            read_offset = read_offsets[tp]
            if read_offset is not None and records[0].offset < read_offset:
                records = [record for record in records if record.offset >= read_offset]
                if not records:
                    continue
            previous = read_offset
            if previous is None or records[-1].offset - previous != len(records):  # a gap before or inside
                for record in records:
                    if previous and record.offset - previous > 1:
                        await self._add_gap(tp, previous + 1, record.offset)
                    previous = record.offset
            await self._maybe_commit()
            await inbox.put(Batch(tp, records, generation))
            read_offsets[tp] = records[-1].offset
        on_message = self.callback
        conductor = cast("Conductor", self.app.topics)
        changing, callbacks = conductor._tp_to_callback_lock.locked, conductor._tp_to_callback
        acks_enabled_for = conductor.acks_enabled_for
        for n, (tp, message) in enumerate(messages, 1):
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return
            if n % 100 == 0:
                await asyncio.sleep(0)
            offset, read_offset = message.offset, read_offsets[tp]
            if read_offset is not None and offset < read_offset:
                continue
            if read_offset and offset - read_offset > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, read_offset + 1, offset)
            await self._maybe_commit()
            await (on_message(message) if changing() else callbacks[message.tp](message))
            read_offsets[tp] = offset

    def _new_offset(self, tp: Any) -> int | None:
        """Faust's: the offset to commit for ``tp`` after its acked offsets, which it takes off the list.

        When the acked offsets run without a gap from the committed one (what batches leave),
        found in C instead of Faust's walk over every offset in Python.
        """
        acked = self._acked[tp]
        if acked and not self._gap[tp]:
            acked.sort()
            committed = self._committed_offset[tp]
            if not (committed and acked[0] - committed > 1) and acked[-1] - acked[0] == len(acked) - 1:
                last = acked[-1]
                self._acked_index[tp].difference_update(acked)
                acked.clear()
                return last + 1
        return super()._new_offset(tp)

    async def _maybe_commit(self) -> None:
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()

    def _inbox(self, tp: Any) -> Inbox | None:
        """The inbox of the partition's only reader, if that is an agent served by ``intake.serve`` on raw bytes."""
        channels = cast("Conductor", self.app.topics)._tp_index.get(tp)
        if not channels or len(channels) != 1 or not self.app.topics.acks_enabled_for(tp.topic):
            return None
        (channel,) = channels
        if not isinstance(getattr(channel, "schema", None), RawSchema):
            return None
        return inbox_of(channel)

    async def _commit(self, offsets: Any) -> bool:
        # Faust has flushed the producer; a send that failed means: commit nothing.
        guard = guard_of(self.app)
        if guard is not None and not guard.may_commit():
            return False
        return await super()._commit(offsets)


class Producer(faust_aiokafka.Producer):
    """Faust's aiokafka producer; its flush and its stop first hand over the bus's open batches.

    Faust flushes the producer before every offset commit (at least once): so a commit
    never covers a forward still in a batch of ``producing.BatchingSend``.
    """

    batching: BatchingSend | None = None

    async def on_start(self) -> None:
        """Faust's start, once aiokafka asks for the producer's id as the broker needs (``compat``)."""
        app = self.app
        settings = getattr(app, "settings", None)
        if settings is not None and settings.idempotence == "on" and getattr(app, "broker_kind", None) is None:
            app.broker_kind = await ready_for_producer_ids(settings)  # type: ignore[attr-defined]  # a command's app
        await super().on_start()

    def _settings_extra(self) -> Mapping[str, Any]:
        """Faust's, idempotent unless the settings say no (``clients.producer_options``)."""
        settings = getattr(self.app, "settings", None)  # a test app has none: Faust's own then
        if settings is None:
            return super()._settings_extra()
        return {**producer_options(settings), **super()._settings_extra()}

    async def flush(self) -> None:
        if self.batching is not None:
            await self.batching.ship()
        await super().flush()

    async def on_stop(self) -> None:
        if self.batching is not None and self._producer is not None:
            await self.batching.ship()
        await super().on_stop()

    async def commit_transactions(
        self, tid_to_offset_map: Mapping[str, Mapping[Any, int]], group_id: str, start_new_transaction: bool = True
    ) -> None:
        """Faust's, except that a producer found outside a transaction begins one to carry its offsets.

        Faust's raised ``IllegalOperation`` there and left every later transaction uncommitted.
        """
        for transactional_id, offsets in tid_to_offset_map.items():
            async with self._trn_locks[transactional_id]:
                producer = self._transaction_producers.get(transactional_id)
                if producer is None:
                    self.log.warning("no transactional producer %s to commit %r with", transactional_id, offsets)
                    continue
                if not in_transaction(producer):
                    await producer.begin_transaction()
                await producer.send_offsets_to_transaction(offsets, group_id)
                await producer.commit_transaction()
                if start_new_transaction:
                    await producer.begin_transaction()

    async def abort_open_transactions(self) -> None:
        """Abort what the transactional producers hold open (at a stop, when it was not committed)."""
        for transactional_id, producer in list(self._transaction_producers.items()):
            if not in_transaction(producer):
                continue
            try:
                await asyncio.wait_for(producer.abort_transaction(), 5)
            except Exception as exc:
                self.log.warning("could not abort transaction %s (%s); the broker will", transactional_id, exc)
            else:
                self.log.info("aborted the open transaction of %s", transactional_id)


class Transport(faust_aiokafka.Transport):
    """Kafka transport of metrobus workers."""

    Consumer: ClassVar[Any] = Consumer
    Producer: ClassVar[Any] = Producer
    TransactionManager: ClassVar[Any] = TransactionManager

    async def _really_create_topic(
        self, owner: Any, client: aiokafka.AIOKafkaClient, topic: str, partitions: int, replication: int, **kwargs: Any
    ) -> None:
        """Faust's topic creation, then a wait until the broker names a leader for every partition.

        Kafka answers CreateTopics before its metadata has the new topic's leaders. A consumer
        that subscribed in that moment was assigned no partition of it, and aiokafka looks
        again only after ``metadata_max_age_ms`` (5 minutes): two workers started together
        once shared every stop topic but AddEmail, which neither consumed.
        """
        await super()._really_create_topic(owner, client, topic, partitions, replication, **kwargs)
        deadline = asyncio.get_running_loop().time() + kwargs.get("timeout", 30_000) / 1000
        while not owner.should_stop:
            cluster = await client.fetch_all_metadata()
            known = cluster.partitions_for_topic(topic) or set()
            if known and cluster.available_partitions_for_topic(topic) == known:
                return
            if asyncio.get_running_loop().time() > deadline:
                owner.log.warning("Topic %r has no leader for every partition yet; going on", topic)
                return
            await asyncio.sleep(0.1)
