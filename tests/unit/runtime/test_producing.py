"""The bus's send: Kafka's default partition of a key, and where Faust's own send is kept."""

from __future__ import annotations

import random

import faust
import pytest
from aiokafka.partitioner import DefaultPartitioner

from metrobus_app.runtime.producing import BatchingSend, KeyHashes, crc32_partition, send_for


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 12])
def test_a_key_goes_to_the_partition_aiokafka_picks(count):
    rng = random.Random(count)
    keys = [rng.randbytes(rng.randint(0, 20)) for _ in range(500)] + [b"1234567", b"account-42"]
    hashes, aiokafka = KeyHashes(max_keys=100), DefaultPartitioner()
    partitions = list(range(count))
    for key in keys * 2:  # the second round reads what the first remembered (and what survived a clear)
        assert hashes.partition(key, count) == aiokafka(key, partitions, partitions)


def test_the_remembered_hashes_stay_bounded():
    hashes = KeyHashes(max_keys=10)
    for n in range(25):
        hashes.partition(str(n).encode(), 4)
    assert len(hashes._hashes) <= 10


def test_the_batching_send_is_for_an_at_least_once_worker_with_the_default_partitioner(test_app):
    _, batching = send_for(test_app, test_app.producer, print)
    assert isinstance(batching, BatchingSend)
    assert (batching.linger_s, batching.batch_bytes) == (0.005, 65_536)  # METROBUS_LINGER_MS, METROBUS_BATCH_BYTES
    transactional = faust.App("metrobus-test-eos", processing_guarantee="exactly_once")
    assert send_for(transactional, transactional.producer, print)[1] is None
    own_partitioner = faust.App("metrobus-test-partitioner", producer_partitioner=lambda key, all, available: all[0])
    assert send_for(own_partitioner, own_partitioner.producer, print)[1] is None


def test_crc32_partition_spreads_keys_evenly_and_the_same_in_every_process():
    ids = [f"Source-{p}-{offset}-1800000000000".encode() for p in range(4) for offset in range(200)]
    spread = [crc32_partition(key, 4) for key in ids]
    assert spread == [crc32_partition(key, 4) for key in ids]  # no per-process seed, unlike hash()
    assert set(spread) == {0, 1, 2, 3} and max(spread.count(p) for p in range(4)) < 300
