"""Warming a cache: compare a source with the cache's changelog and write only the difference.

The changelog is the cache, so the warm command reads it first (a plain consumer, no group):
a re-warm with the same data writes nothing, a replace removes what the source no longer
has, and the summary can say what was added, changed and removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import TopicPartition

from metrobus_app.caches.cache import Cache, Change
from metrobus_app.caches.loader import changelog_consumer
from metrobus_app.config.settings import Settings

Progress = Callable[[int], None]


@dataclass
class WarmReport:
    """What a warm (or a removal) did to one cache."""

    cache: str
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    entries: int = 0

    def summary(self) -> str:
        return (
            f"{self.cache}: {self.added} added, {self.changed} changed, {self.removed} removed, "
            f"{self.unchanged} unchanged; {self.entries} entries now"
        )


async def read_changelog(settings: Settings, topic: str, progress: Progress | None = None) -> dict[bytes, bytes]:
    """The content of a cache as its changelog holds it now (empty if the topic does not exist)."""
    consumer = changelog_consumer(settings)
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return {}
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, 0)
        content: dict[bytes, bytes] = {}
        while True:
            records = (await consumer.getmany(tp, timeout_ms=300, max_records=50_000)).get(tp, [])
            for record in records:
                if record.value is None:
                    content.pop(record.key, None)
                else:
                    content[record.key] = record.value
            if progress is not None:
                progress(len(records))
            # The end offset alone is not trusted (see cache_loader): stop on an empty fetch past it.
            if not records and await consumer.position(tp) >= end:
                return content
    finally:
        await consumer.stop()


def plan_warm(
    cache: str, current: dict[bytes, bytes], source: Iterable[tuple[str, str]], *, replace: bool
) -> tuple[list[Change], WarmReport]:
    """The changelog records that make ``current`` hold ``source`` (and only it, with ``replace``)."""
    report = WarmReport(cache)
    changes: list[Change] = []
    seen: set[bytes] = set()
    for key, value in source:
        k, v = key.encode(), value.encode()
        old = current.get(k)
        if replace:
            seen.add(k)
        if old == v:
            report.unchanged += 1
            continue
        if old is None:
            report.added += 1
        else:
            report.changed += 1
        current[k] = v
        changes.append((k, v))
    if replace:
        gone = [k for k in current if k not in seen]
        changes.extend((k, None) for k in gone)
        report.removed = len(gone)
        for k in gone:
            del current[k]
    report.entries = len(current)
    return changes, report


def plan_removal(cache: str, current: dict[bytes, bytes], keys: Iterable[str]) -> tuple[list[Change], WarmReport]:
    """The tombstones that remove ``keys`` (keys the cache does not hold are counted unchanged)."""
    report = WarmReport(cache)
    changes: list[Change] = []
    for key in keys:
        k = key.encode()
        if current.pop(k, None) is None:
            report.unchanged += 1
        else:
            report.removed += 1
            changes.append((k, None))
    report.entries = len(current)
    return changes, report


async def write_changes(app: object, cache: Cache, changes: list[Change], progress: Progress | None = None) -> None:
    """Send the records to the cache's changelog through the app's producer and wait until all are acknowledged."""
    bus = app.bus  # type: ignore[attr-defined]
    await bus.changelog_topic(cache).maybe_declare()
    producer = await app.maybe_start_producer()  # type: ignore[attr-defined]
    for done, (key, value) in enumerate(changes, 1):
        await producer.send(cache.changelog, key, value, partition=0, timestamp=None, headers=None)
        if progress is not None and done % 10_000 == 0:
            progress(10_000)
    await producer.flush()
    if progress is not None:
        progress(len(changes) % 10_000)
