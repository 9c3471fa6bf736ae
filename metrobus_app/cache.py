"""Lookup caches: Faust GlobalTables that every worker holds whole, warmed through their changelog."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import faust

Progress = Callable[[int], None]


class Cache:
    """A str -> str lookup table, local to every worker (RocksDB with the default store).

    Warming writes straight to the table's changelog topic, once, from any process;
    each worker's GlobalTable reads that changelog, and a restarted worker with its data
    dir reads only what it has not seen. A value of None removes the key.
    """

    def __init__(self, app: faust.App, name: str, help: str) -> None:
        self.name = name
        self.app = app
        # partitions=1, recovery_buffer_size=1: the remedy Faust's GlobalTable docstring
        # gives for the endless recovery loop with several workers.
        self.table = app.GlobalTable(
            name,
            key_type=str,
            value_type=str,
            partitions=1,
            recovery_buffer_size=1,
            help=help,
        )

    def get(self, key: str) -> str | None:
        """The cached value of ``key``, or None."""
        return None if key is None else self.table.get(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.table

    def __len__(self) -> int:
        return len(self.table)

    async def load(self, items: Iterable[tuple[str, str | None]], progress: Progress | None = None) -> int:
        """Write ``(key, value)`` pairs to the changelog (value None deletes); return how many."""
        producer = await self.app.maybe_start_producer()
        topic = self.table.changelog_topic
        await topic.maybe_declare()
        sent = 0
        for key, value in items:
            await topic.send(key=key, value=value, partition=0)
            sent += 1
            if progress is not None and sent % 10_000 == 0:
                progress(10_000)
        await producer.flush()
        if progress is not None:
            progress(sent % 10_000)
        return sent
