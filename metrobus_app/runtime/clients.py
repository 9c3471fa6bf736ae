"""Kafka clients metrobus runs beside Faust's: consumers outside the group, and what every producer of the bus sets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from metrobus_app.config.settings import Settings
from metrobus_app.security.credentials import client_options


def producer_options(settings: Settings) -> dict[str, Any]:
    """acks=all, and idempotence unless ``METROBUS_IDEMPOTENCE=off``.

    An idempotent producer numbers its batches per partition, so the broker drops a batch that
    the producer sent again because the first answer was lost (a leader killed mid-request):
    without it, a failover can write a record twice (a pusher's record then counts as two).
    """
    options: dict[str, Any] = {"acks": "all"}
    if settings.idempotence == "on":
        options["enable_idempotence"] = True  # asks for a producer id: see compat.ready_for_producer_ids
    return options


def plain_consumer(
    settings: Settings, purpose: str, *, min_wait_ms: int = 100, committed_only: bool = False
) -> AIOKafkaConsumer:
    """A consumer outside the consumer group: no commits, from the start, big fetches, the bus's TLS/SASL.

    Its fetch waits at least ``min_wait_ms``: these readers follow topics that change seldom,
    so they need not poll as often as a stop does. ``committed_only``: read as ``read_committed``
    (records of open or aborted transactions left out; its end offsets are the last stable ones).
    """
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.app_id}-{purpose}",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=max(settings.fetch_wait_ms, min_wait_ms),
        max_partition_fetch_bytes=8 * 1024 * 1024,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
        **client_options(settings),
    )


async def partitions_of(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> dict[str, set[int]]:
    """The partitions of each of ``topics`` that exists now, by one metadata request for the whole cluster.

    ``consumer.partitions_for_topic`` answers only for topics the consumer's own metadata tracks:
    Apache Kafka, asked for no topic, names none (Tansu names them all), so it is no use before
    the consumer is assigned.
    """
    cluster = await consumer._client.fetch_all_metadata()
    return {topic: found for topic in topics if (found := cluster.partitions_for_topic(topic))}


async def read_topic(settings: Settings, topic: str, *, committed_only: bool = False) -> list[ConsumerRecord]:
    """Every record of ``topic`` (all partitions, from the start; empty if there is no such topic).

    The end offsets the broker reports are not trusted alone (the embedded broker's can be short
    by a batch): reading stops at an empty fetch once every partition is past its end offset.
    """
    consumer = plain_consumer(settings, "accounting", min_wait_ms=200, committed_only=committed_only)
    await consumer.start()
    try:
        found = (await partitions_of(consumer, [topic])).get(topic)
        if not found:
            return []
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        while True:
            batches = await consumer.getmany(timeout_ms=300, max_records=50_000)
            for batch in batches.values():
                records.extend(batch)
            if not batches:
                positions = [await consumer.position(tp) for tp in partitions]
                if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                    return records
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings, topic: str, *, committed_only: bool) -> dict[int, int]:
    """Each partition's end: the log end, or (``committed_only``) the last stable offset, below any open transaction."""
    consumer = plain_consumer(settings, "accounting", committed_only=committed_only)
    await consumer.start()
    try:
        found = (await partitions_of(consumer, [topic])).get(topic, set())
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in sorted(found)]) if found else {}
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()
