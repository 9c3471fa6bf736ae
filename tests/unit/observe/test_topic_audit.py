"""The read_committed audit of stop topics (``observe/topic_audit.py``): duplicates, key order, open transactions."""

import json

from aiokafka.structs import ConsumerRecord

from metrobus_app.observe.topic_audit import audit_topic, open_transactions, source_places
from metrobus_app.wire.ids import source_id


def record(partition: int, offset: int, key: bytes | None, value: object, topic: str = "AddEmail") -> ConsumerRecord:
    raw = json.dumps(value).encode() if value is not None else None
    return ConsumerRecord(topic, partition, offset, 1000 + offset, 0, key, raw, None, 0, 0, [])


def source(n: int) -> list[ConsumerRecord]:
    """Source records 0..n-1 on partition 0, keyed a/b alternately."""
    return [record(0, x, b"ab"[x % 2 : x % 2 + 1], {"x": x}, topic="Source") for x in range(n)]


def envelope(src: ConsumerRecord, *, hops: int = 1, failed: bool = False) -> dict:
    hop_list = [{"stop": "busdriver"}] * hops
    if failed:
        hop_list = [*hop_list, {"stop": "Later", "attempt": 1, "error": "ConnectionError"}]
    message_id = source_id(src.topic, src.partition, src.offset, src.timestamp)
    return {
        "header": {"id": message_id, "route": [], "historical_route": ["AddEmail"], "hops": hop_list},
        "payload": {},
    }


def test_the_same_arrival_twice_is_a_duplicate_and_a_later_hop_is_not():
    src = source(3)
    places = source_places(src)
    seen = [record(0, 0, b"a", envelope(src[0])), record(0, 1, b"b", envelope(src[1]))]
    seen += [record(0, 2, b"a", envelope(src[0])), record(0, 3, b"a", envelope(src[0], hops=2))]
    audit = audit_topic(seen, places, {})
    assert audit.records == 4 and audit.messages == 2
    assert audit.duplicates == {envelope(src[0])["header"]["id"]: 1}
    assert audit.out_of_order == []


def test_a_key_whose_later_record_arrives_first_is_out_of_order_unless_the_earlier_one_failed_an_attempt():
    src = source(4)
    places = source_places(src)
    swapped = [record(1, 0, b"a", envelope(src[2])), record(1, 1, b"a", envelope(src[0]))]
    assert audit_topic(swapped, places, {}).out_of_order == [envelope(src[0])["header"]["id"]]
    retried = [record(1, 0, b"a", envelope(src[2])), record(1, 1, b"a", envelope(src[0], failed=True))]
    assert audit_topic(retried, places, {}).out_of_order == []
    other_keys = [record(1, 0, b"a", envelope(src[2])), record(1, 1, b"b", envelope(src[1]))]
    assert audit_topic(other_keys, places, {}).out_of_order == []


def test_a_partition_whose_stable_end_is_below_its_log_end_has_an_open_transaction():
    assert open_transactions({0: 10, 1: 7, 2: 5}, {0: 10, 1: 9, 2: 5}) == {1: 2}


def test_values_that_are_not_envelopes_are_counted_and_otherwise_left_alone():
    audit = audit_topic([record(0, 0, None, None), record(0, 1, None, [1, 2])], {}, {})
    assert audit.records == 2 and audit.messages == 0 and not audit.duplicates
