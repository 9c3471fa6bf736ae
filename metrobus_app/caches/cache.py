"""Lookup caches: a str -> str table every worker holds whole, on RocksDB, fed by a compacted changelog.

A cache's content is its changelog topic (``<app id>-<name>-changelog``, one partition,
compacted; a record with no value removes its key). Warming writes that topic once, from
any process; every worker tails it into its own RocksDB (``caches/loader.py``) and keeps the
offset it applied in the same write batch, so a restarted worker reads only what is new.
Lookups are a local RocksDB get: no network round trip, no Python dict of the whole cache.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from rocksdict import Options, PlainTableFactoryOptions, Rdict, SliceTransform, WriteBatch

Change = tuple[bytes, "bytes | None"]

# Keys are UTF-8 text, and no UTF-8 text starts with 0xff: these can never collide with one.
_OFFSET = b"\xffmetrobus:offset"
_COUNT = b"\xffmetrobus:count"
_LAST = b"\xffmetrobus:last"


class MemoryCacheStore:
    """A cache's entries in a dict: for tests and ``METROBUS_STORE=memory://``."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.offset = -1
        self.last = 0
        self.get: Callable[[bytes], bytes | None] = self.data.get

    def __len__(self) -> int:
        return len(self.data)

    def apply(self, changes: Iterable[Change], offset: int, last: int = 0) -> None:
        """Apply puts and deletes (value None); remember the changelog offset and record they end at."""
        for key, value in changes:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self.offset, self.last = offset, last

    def close(self) -> None:
        self.data.clear()


class RocksCacheStore:
    """A cache's entries in RocksDB, with the applied offset and an exact entry count beside them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(path), _point_lookup_options())
        self.get: Callable[[bytes], bytes | None] = self.db.get
        self.offset = _unpack(self.db.get(_OFFSET), -1)
        self.last = _unpack(self.db.get(_LAST), 0)
        self._count = _unpack(self.db.get(_COUNT), 0)

    def __len__(self) -> int:
        return self._count

    def apply(self, changes: Iterable[Change], offset: int, last: int = 0) -> None:
        """Apply puts and deletes (value None), the offset and the last record's fingerprint atomically."""
        batch = WriteBatch(raw_mode=True)
        count = self._count
        pending: dict[bytes, bool] = {}  # keys written earlier in this batch: present or not
        for key, value in changes:
            present = pending[key] if key in pending else self.db.get(key) is not None
            if value is None:
                if present:
                    batch.delete(key)
                    count -= 1
            else:
                batch.put(key, value)
                count += not present
            pending[key] = value is not None
        batch.put(_OFFSET, struct.pack(">q", offset))
        batch.put(_COUNT, struct.pack(">q", count))
        batch.put(_LAST, struct.pack(">q", last))
        self.db.write(batch)
        self._count = count
        self.offset, self.last = offset, last

    def close(self) -> None:
        self.db.close()

    def destroy(self) -> None:
        """Close and delete the database (its changelog no longer matches it)."""
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)


def _point_lookup_options() -> Options:
    """RocksDB tuned for a cache that is only ever read by key.

    PlainTable files, memory-mapped, with a hash index on an 8-byte key prefix and bloom
    filters: about 1.2 million gets/s here, against about 260,000 with the default
    block-based tables (benchmarks/cache_benchmark.py).
    """
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_allow_mmap_reads(True)
    options.set_prefix_extractor(SliceTransform.create_max_len_prefix(8))
    table = PlainTableFactoryOptions()
    table.user_key_length = 0
    table.bloom_bits_per_key = 10
    table.hash_table_ratio = 0.75
    table.index_sparseness = 16
    options.set_plain_table_factory(table)
    return options


def _unpack(raw: bytes | None, default: int) -> int:
    return default if raw is None else struct.unpack(">q", raw)[0]


class Cache:
    """One lookup cache as stops see it: ``cache.get(key)``, ``key in cache``, ``len(cache)``.

    Stops of a worker do not start before every cache has caught up with its changelog
    (``ready``), so a fresh worker never drops a message for want of a warm cache.
    """

    def __init__(self, name: str, changelog: str, help: str = "") -> None:
        self.name = name
        self.changelog = changelog
        self.help = help
        self.ready = asyncio.Event()
        self.store: MemoryCacheStore | RocksCacheStore | None = None
        self._get: Callable[[bytes], bytes | None] = _not_open

    def open(self, store_url: str, data_dir: Path) -> MemoryCacheStore | RocksCacheStore:
        """Open the local store: RocksDB under ``data_dir`` unless the URL says ``memory://``."""
        if self.store is None:
            if store_url.startswith("memory:"):
                self.store = MemoryCacheStore()
            else:
                self.store = RocksCacheStore(data_dir / "caches" / self.name)
            self._get = self.store.get
        return self.store

    def reset(self, store_url: str, data_dir: Path) -> MemoryCacheStore | RocksCacheStore:
        """Throw the local store away and open an empty one."""
        if isinstance(self.store, RocksCacheStore):
            self.store.destroy()
        elif self.store is not None:
            self.store.close()
        self.store = None
        return self.open(store_url, data_dir)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
            self._get = _not_open

    def get(self, key: str | None) -> str | None:
        """The cached value of ``key``, or None."""
        if key is None:
            return None
        value = self._get(key.encode())
        return None if value is None else value.decode()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._get(key.encode()) is not None

    def __len__(self) -> int:
        return 0 if self.store is None else len(self.store)


def _not_open(key: bytes) -> bytes | None:
    raise RuntimeError("this cache is not open here: lookups work in a worker (or after Cache.open)")
