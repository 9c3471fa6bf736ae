"""``METROBUS_PROCESSING_GUARANTEE=exactly_once`` on the embedded broker: what runs, and what it cannot prove.

The worker runs Faust's transactional mode (with ``kafka_compat``'s InitProducerId v3, which
Tansu needs). Two facts are measured here: a run delivers every message once; and after a
kill -9, Tansu still hands the records of the aborted transactions to ``read_committed``
readers (``test_tansu_shows_aborted_records_to_read_committed_readers``), so the duplicates
that exactly-once would hide on Kafka show up here. The README says so.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from .conftest import bus_env, run_cli
from .test_reliability import note, received, reconcile, start_push, wait_until, warm_demo_caches

pytestmark = pytest.mark.integration

EXACTLY_ONCE = {"METROBUS_PROCESSING_GUARANTEE": "exactly_once"}


def committed_ids(broker, topic: str) -> Counter:
    """Message ids on ``topic`` as a read_committed consumer sees them."""
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=None, isolation_level="read_committed", consumer_timeout_ms=3000
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        return Counter(json.loads(record.value)["header"]["id"] for record in consumer)
    finally:
        consumer.close()


def test_an_exactly_once_worker_delivers_every_message_once(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    warm_demo_caches(env, tmp_path)
    worker = workers(**EXACTLY_ONCE).wait_ready()
    worker.wait_caches({"emails": 1600, "whitelist": 800})
    pushed = run_cli(env, "push", "--count", "2000", "--accounts", "2000", "--seed", "5")
    assert pushed.returncode == 0, pushed.stderr
    result = reconcile(env, wait=120)
    assert result["pushed"] == 2000 and result["unaccounted"] == 0 and result["duplicates"] == 0
    on_log = committed_ids(broker, "Log")
    assert len(on_log) == result["delivered"] and max(on_log.values()) == 1
    assert "transactional" in worker.log_text()  # Faust started its transactional producers


def test_exactly_once_after_kill_9_loses_nothing_and_tansu_lets_duplicates_through(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    warm_demo_caches(env, tmp_path)
    worker = workers("eos", **EXACTLY_ONCE).wait_ready()
    worker.wait_caches({"emails": 1600, "whitelist": 800})
    pusher = start_push(env, 4000)
    wait_until(lambda: received(worker, "busdriver") >= 1500, 120, "the busdriver to take 1500 records")
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    worker.log.close()
    time.sleep(1)
    worker.start().wait_ready()
    assert pusher.wait(timeout=120) == 0
    result = reconcile(env, wait=180)
    assert result["pushed"] == 4000 and result["unaccounted"] == 0
    on_log = committed_ids(broker, "Log")
    assert len(on_log) == result["delivered"]
    note(
        "exactly_once_kill_9",
        {
            "pushed": 4000,
            "unaccounted": 0,
            "duplicate_deliveries_on_Log_read_committed": sum(on_log.values()) - len(on_log),
            "duplicate_fates": result["duplicate_fates"],
        },
    )


def test_tansu_shows_aborted_records_to_read_committed_readers(broker):
    """Why exactly-once cannot be proven here: an aborted transaction's record is still read."""
    KafkaAdminClient(bootstrap_servers=broker.bootstrap).create_topics([NewTopic("txn-check", 1, 1)])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="metrobus-txn-check")
    producer.init_transactions()
    producer.begin_transaction()
    producer.send("txn-check", b"aborted", partition=0)
    producer.flush()
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send("txn-check", b"committed", partition=0)
    producer.commit_transaction()
    producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=None, isolation_level="read_committed", consumer_timeout_ms=3000
    )
    consumer.assign([TopicPartition("txn-check", 0)])
    consumer.seek_to_beginning()
    values = [record.value for record in consumer]
    consumer.close()
    # On Apache Kafka this is [b"committed"]. If Tansu ever hides aborted records, this fails:
    # then run the kill -9 test above for exactly-once and update the README.
    assert values == [b"aborted", b"committed"]
