"""The bus's consumer: the offset to commit after acked offsets is the one Faust would commit."""

from __future__ import annotations

import random

from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

from metrobus_app import Settings, create_app
from metrobus_app.runtime.transport import Consumer


def test_the_offset_to_commit_is_faust_s_with_or_without_gaps():
    consumer = create_app(Settings(app_id="unit-transport", store="memory://")).consumer
    assert isinstance(consumer, Consumer)
    rng, tp = random.Random(3), TopicPartition("Stop", 0)
    for _ in range(300):
        committed = rng.choice([None, 0, 5, 40])
        start = (committed or 0) + rng.choice([0, 1, 1, 1, 2])
        acked = list(range(start, start + rng.randint(0, 30)))
        if rng.random() < 0.3 and len(acked) > 2:
            del acked[rng.randrange(1, len(acked) - 1)]  # a gap inside
        rng.shuffle(acked)
        gap = rng.random() < 0.1 and acked
        results = []
        for new_offset in (Consumer._new_offset, faust_aiokafka.Consumer._new_offset):
            consumer._acked[tp], consumer._acked_index[tp] = list(acked), set(acked)
            consumer._committed_offset[tp] = committed
            consumer._gap.pop(tp, None)
            if gap:
                consumer._gap[tp].addi(max(acked) + 1, max(acked) + 3)
            offset = new_offset(consumer, tp)
            results.append((offset, sorted(consumer._acked[tp]), sorted(consumer._acked_index[tp])))
        assert results[0] == results[1], (committed, acked)


async def test_the_bus_s_producer_is_idempotent_unless_the_settings_say_no():
    """A producer that resends a batch after a lost answer (a leader killed) must not write it twice."""
    for idempotence, expected in (("on", True), ("off", False)):
        settings = Settings(app_id="unit-producer", store="memory://", idempotence=idempotence)
        aio = create_app(settings).producer._new_producer()
        assert (aio._txn_manager is not None) is expected
        assert aio._sender._acks == -1  # acks=all either way
