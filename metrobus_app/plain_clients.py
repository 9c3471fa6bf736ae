"""Kafka consumers metrobus runs beside Faust's: no group, every worker (or command) reads everything."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer

from .credentials import client_options
from .settings import Settings


def plain_consumer(settings: Settings, purpose: str, *, min_wait_ms: int = 100) -> AIOKafkaConsumer:
    """A consumer outside the consumer group: no commits, from the start, big fetches, the bus's TLS/SASL.

    Its fetch waits at least ``min_wait_ms``: these readers follow topics that change seldom,
    so they need not poll as often as a stop does.
    """
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.app_id}-{purpose}",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=max(settings.fetch_wait_ms, min_wait_ms),
        max_partition_fetch_bytes=8 * 1024 * 1024,
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
