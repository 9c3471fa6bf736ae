"""Which APIs a broker and this aiokafka share no version of (``runtime/broker_versions.py``)."""

from metrobus_app.runtime.broker_versions import NEEDED, TRANSACTIONAL, missing
from metrobus_app.runtime.seams import client_api_versions


def test_every_api_the_bus_needs_has_versions_in_this_aiokafka():
    ours = client_api_versions()
    assert all(ours.get(key) for key in {**NEEDED, **TRANSACTIONAL}), sorted(set(NEEDED) - set(ours))


def test_an_api_is_missing_when_the_ranges_do_not_meet_or_the_broker_has_none():
    client = {0: {0, 1, 2, 3}, 1: {4, 5}, 3: {0, 1}}
    broker = {0: (3, 9), 1: (6, 12)}
    assert missing(broker, client, {0: "Produce", 1: "Fetch", 3: "Metadata"}) == [
        "Fetch (broker v6-12, aiokafka v4-5)",
        "Metadata (broker: none, aiokafka v0-1)",
    ]


def test_kafka_4_4s_answer_leaves_nothing_missing():
    # Kafka 4.4.0's ApiVersions answer (docs/brokers.md), for the APIs the bus uses.
    kafka_4_4 = {0: (0, 13), 1: (4, 18), 2: (1, 11), 3: (0, 13), 8: (2, 10), 9: (1, 10), 10: (0, 6), 11: (0, 9)}
    kafka_4_4 |= {12: (0, 4), 13: (0, 5), 14: (0, 5), 19: (2, 7), 22: (0, 5), 24: (0, 5), 25: (0, 4), 26: (0, 5)}
    kafka_4_4 |= {28: (0, 6)}
    assert missing(kafka_4_4, client_api_versions(), {**NEEDED, **TRANSACTIONAL}) == []
