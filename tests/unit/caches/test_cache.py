"""Cache stores (real RocksDB in a temp dir), lookups, and the plans a warm makes."""

from __future__ import annotations

import pytest

from metrobus_app.caches.cache import Cache, MemoryCacheStore, RocksCacheStore
from metrobus_app.caches.warming import plan_removal, plan_warm


def test_rocks_store_applies_puts_and_deletes_and_counts_exactly(tmp_path):
    store = RocksCacheStore(tmp_path / "db")
    assert (store.offset, len(store)) == (-1, 0)
    store.apply([(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", None)], offset=3, last=99)
    assert (store.get(b"a"), store.get(b"b"), store.get(b"c")) == (b"3", b"2", None)
    assert len(store) == 2
    store.apply([(b"b", None), (b"b", b"4"), (b"b", None), (b"z", None)], offset=7)
    assert len(store) == 1
    assert store.get(b"b") is None


def test_rocks_store_remembers_offset_count_and_last_record_across_reopen(tmp_path):
    store = RocksCacheStore(tmp_path / "db")
    store.apply([(b"k%d" % i, b"v") for i in range(1000)], offset=999, last=1234)
    store.close()
    again = RocksCacheStore(tmp_path / "db")
    assert (again.offset, again.last, len(again)) == (999, 1234, 1000)
    assert again.get(b"k500") == b"v"


def test_memory_store_behaves_like_rocks():
    store = MemoryCacheStore()
    store.apply([(b"a", b"1"), (b"b", b"2"), (b"a", None)], offset=2, last=5)
    assert (store.get(b"a"), store.get(b"b"), len(store), store.offset, store.last) == (None, b"2", 1, 2, 5)


def test_cache_lookups_and_reset(tmp_path):
    cache = Cache("emails", "app-emails-changelog")
    with pytest.raises(RuntimeError, match="not open"):
        cache.get("1")
    store = cache.open("rocksdb://", tmp_path)
    assert (tmp_path / "caches" / "emails").is_dir()
    store.apply([(b"1000001", b"ann@example.com")], offset=0)
    assert cache.get("1000001") == "ann@example.com"
    assert cache.get("1000002") is None
    assert cache.get(None) is None
    assert "1000001" in cache
    assert 1000001 not in cache
    assert len(cache) == 1
    cache.reset("rocksdb://", tmp_path)
    assert (len(cache), cache.get("1000001"), cache.store.offset) == (0, None, -1)
    cache.close()


def test_a_warm_writes_only_the_difference():
    current = {b"1": b"a@x", b"2": b"b@x", b"3": b"c@x"}
    changes, report = plan_warm("emails", dict(current), [("1", "a@x"), ("2", "B@x"), ("4", "d@x")], replace=False)
    assert changes == [(b"2", b"B@x"), (b"4", b"d@x")]
    assert (report.added, report.changed, report.removed, report.unchanged, report.entries) == (1, 1, 0, 1, 4)
    assert report.summary() == "emails: 1 added, 1 changed, 0 removed, 1 unchanged; 4 entries now"


def test_a_replace_also_removes_what_the_source_lacks():
    current = {b"1": b"a@x", b"2": b"b@x", b"3": b"c@x"}
    changes, report = plan_warm("emails", current, [("1", "a@x")], replace=True)
    assert sorted(changes) == [(b"2", None), (b"3", None)]
    assert (report.removed, report.unchanged, report.entries) == (2, 1, 1)


def test_the_same_warm_twice_writes_nothing_the_second_time():
    current: dict[bytes, bytes] = {}
    source = [(str(i), f"{i}@x") for i in range(100)]
    first, _ = plan_warm("emails", current, source, replace=True)
    second, report = plan_warm("emails", current, source, replace=True)
    assert (len(first), second, report.unchanged) == (100, [], 100)


def test_a_removal_tombstones_only_present_keys():
    changes, report = plan_removal("whitelist", {b"a@x": b"1", b"b@x": b"1"}, ["a@x", "zz@x"])
    assert changes == [(b"a@x", None)]
    assert (report.removed, report.unchanged, report.entries) == (1, 1, 1)
