"""Every worker tails every cache's changelog into its local store, and says when it has caught up."""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from metrobus_app.caches.cache import Cache
from metrobus_app.config.settings import Settings
from metrobus_app.runtime.clients import plain_consumer

log = logging.getLogger("metrobus.caches")

PROGRESS_EVERY = 5.0


def changelog_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A plain consumer for reading changelogs whole."""
    return plain_consumer(settings, "caches")


def fingerprint(key: bytes | None, value: bytes | None) -> int:
    """What a changelog record looked like, to recognise it again after a restart."""
    return zlib.crc32((key or b"") + b"\x00" + (value or b"\x00"))


class CacheLoader:
    """Reads the changelogs of ``caches`` with a plain consumer (no group: every worker reads all).

    On start each cache resumes after the offset its store has applied, if the record at that
    offset is still the one it applied; otherwise (a new broker, a rewritten changelog) the
    store is emptied and read again from the beginning. A cache is ready once it has read up
    to the end offset it saw at start and a fetch came back empty: the embedded broker may
    report the start of its last batch as the end, so the end offset alone is not trusted.
    """

    def __init__(self, app: Any, caches: Sequence[Cache]) -> None:
        self.app = app
        self.caches = {cache.changelog: cache for cache in caches}

    async def run(self) -> None:
        """Load, then keep following, until the worker stops."""
        if not self.caches:
            return
        consumer = changelog_consumer(self.app.settings)
        await consumer.start()
        try:
            await self._follow(consumer)
        finally:
            await consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        partitions = [TopicPartition(changelog, 0) for changelog in self.caches]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        started = time.monotonic()
        for tp in partitions:
            await self._resume(consumer, tp)
        waiting = {tp for tp in partitions if not self.caches[tp.topic].ready.is_set()}
        next_report = started + PROGRESS_EVERY
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for tp, records in batches.items():
                last = records[-1]
                store = self.caches[tp.topic].store
                assert store is not None, "_resume opened every cache"
                store.apply(((r.key, r.value) for r in records), last.offset, fingerprint(last.key, last.value))
            caught_up = [tp for tp in waiting if tp not in batches and await consumer.position(tp) >= ends[tp]]
            for tp in caught_up:
                cache = self.caches[tp.topic]
                cache.ready.set()
                waiting.discard(tp)
                log.info("cache %s ready: %d entries (%.1f s)", cache.name, len(cache), time.monotonic() - started)
            if waiting and time.monotonic() >= next_report:
                next_report += PROGRESS_EVERY
                for tp in waiting:
                    cache = self.caches[tp.topic]
                    assert cache.store is not None, "_resume opened every cache"
                    log.info(
                        "cache %s loading: %d entries so far, offset %d of about %d",
                        cache.name,
                        len(cache),
                        cache.store.offset,
                        ends[tp],
                    )

    async def _resume(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        cache = self.caches[tp.topic]
        settings = self.app.settings
        store = cache.open(settings.store, settings.data_dir)
        if store.offset < 0:
            consumer.seek(tp, 0)
            return
        consumer.seek(tp, store.offset)
        records = (await consumer.getmany(tp, timeout_ms=2000, max_records=1)).get(tp, [])
        if records and (
            records[0].offset > store.offset
            or (records[0].offset == store.offset and fingerprint(records[0].key, records[0].value) == store.last)
        ):
            log.info("cache %s: resuming after offset %d with %d entries", cache.name, store.offset, len(store))
            consumer.seek(tp, records[0].offset)
            return
        log.warning("cache %s: the changelog no longer holds what this worker applied; reloading it", cache.name)
        cache.reset(settings.store, settings.data_dir)
        consumer.seek(tp, 0)
