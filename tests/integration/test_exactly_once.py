"""``METROBUS_PROCESSING_GUARANTEE=exactly_once``: what runs on both brokers, and what Apache Kafka proves.

The worker runs Faust's transactional mode. On Apache Kafka a ``kill -9`` in the middle of
20,000 records loses nothing and a ``read_committed`` reader of every stop topic sees each
message once. Tansu hands the records of aborted transactions to ``read_committed`` readers
(``test_what_read_committed_readers_see_of_an_aborted_transaction``), so there the duplicates
that exactly-once hides on Kafka show up; that run only proves that nothing is lost.
"""

from __future__ import annotations

import json
import random
import signal
from collections import Counter

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from agents.pusher import make_record
from tables.demo_data import account_range

from .conftest import bus_env, only_on, produce, run_cli
from .test_reliability import ACCOUNTS, note, received, reconcile, start_push, wait_until, warm_demo_caches

pytestmark = [pytest.mark.integration, pytest.mark.tansu, pytest.mark.guarantee]

EXACTLY_ONCE = {"METROBUS_PROCESSING_GUARANTEE": "exactly_once"}
STOP_TOPICS = ("AddEmail", "WhiteList", "Log")


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
    # The worker told its broker by the cluster id and waits as suits it (InitProducerId v3 on Tansu only).
    expected = {"tansu": "broker: Tansu; fetch wait 10 ms", "kafka": "broker: Kafka; fetch wait 500 ms"}
    assert expected[broker.kind] in worker.log_text()
    assert ("InitProducerId v3 for Tansu" in worker.log_text()) is (broker.kind == "tansu")


def kill_9_in_the_middle(env, workers, pushed: int, at: int):
    """Warm, run an exactly-once worker, ``kill -9`` it once the busdriver took ``at`` records, restart it."""
    worker = workers("eos", **EXACTLY_ONCE).wait_ready()
    worker.wait_caches({"emails": 1600, "whitelist": 800})
    pusher = start_push(env, pushed)
    wait_until(lambda: received(worker, "busdriver") >= at, 120, f"the busdriver to take {at} records")
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    worker.log.close()
    worker.start().wait_ready()
    assert pusher.wait(timeout=180) == 0
    return reconcile(env, wait=240)


@only_on("kafka", "Tansu shows aborted transactions' records to read_committed readers (see the test below)")
def test_exactly_once_kill_9_in_the_middle_of_20000_records_loses_nothing_and_duplicates_nothing(
    broker, workers, tmp_path
):
    env = bus_env(broker.url, tmp_path / "cli")
    warm_demo_caches(env, tmp_path)
    result = kill_9_in_the_middle(env, workers, 20_000, 6000)
    assert result["pushed"] == 20_000 and result["unaccounted"] == 0, result["unaccounted_ids"][:10]
    seen = {topic: committed_ids(broker, topic) for topic in STOP_TOPICS}
    duplicates = {topic: sum(ids.values()) - len(ids) for topic, ids in seen.items()}
    note(
        "exactly_once_kill_9",
        {
            "pushed": 20_000,
            "unaccounted": result["unaccounted"],
            "read_committed_records": {topic: sum(ids.values()) for topic, ids in seen.items()},
            "read_committed_duplicates": duplicates,
            "delivered": result["delivered"],
            "duplicate_fates": result["duplicate_fates"],
        },
    )
    assert duplicates == dict.fromkeys(STOP_TOPICS, 0)
    # What reached each stop is what the stop before it forwarded, once: Log holds exactly the delivered.
    assert len(seen["Log"]) == result["delivered"]
    assert len(seen["AddEmail"]) == 20_000


@only_on("tansu", "on Apache Kafka the test above proves no duplicates; this one measures Tansu's")
def test_exactly_once_after_kill_9_loses_nothing_and_tansu_lets_duplicates_through(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    warm_demo_caches(env, tmp_path)
    result = kill_9_in_the_middle(env, workers, 4000, 1500)
    assert result["pushed"] == 4000 and result["unaccounted"] == 0
    on_log = committed_ids(broker, "Log")
    assert len(on_log) == result["delivered"]
    note(
        "exactly_once_kill_9_tansu",
        {
            "pushed": 4000,
            "unaccounted": 0,
            "duplicate_deliveries_on_Log_read_committed": sum(on_log.values()) - len(on_log),
            "duplicate_fates": result["duplicate_fates"],
        },
    )


def test_what_read_committed_readers_see_of_an_aborted_transaction(broker):
    """Apache Kafka hides an aborted transaction's record; Tansu 0.6 shows it, so exactly-once is proven on Kafka."""
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
    # If Tansu ever hides aborted records, this fails: then the kill -9 proof can run on it too.
    assert values == {"kafka": [b"committed"], "tansu": [b"aborted", b"committed"]}[broker.kind]


def test_unkeyed_source_records_are_delivered_once_by_an_exactly_once_worker(broker, workers, tmp_path):
    """Raw records without a key (any producer may send them) are forwarded to any partition of the
    next stop, so into another transaction than their offsets': each still arrives once."""
    env = bus_env(broker.url, tmp_path / "cli")
    warm_demo_caches(env, tmp_path)
    worker = workers(**EXACTLY_ONCE).wait_ready()
    worker.wait_caches({"emails": 1600, "whitelist": 800})
    rng = random.Random(7)
    accounts = account_range(ACCOUNTS)
    records = [json.dumps(make_record(x, rng, accounts)).encode() for x in range(2000)]
    produce(broker, "Source", [(None, value) for value in records])
    result = reconcile(env, wait=120)
    assert result["pushed"] == 2000 and result["unaccounted"] == 0, result["unaccounted_ids"][:10]
    assert result["duplicates"] == 0
    on_add_email = committed_ids(broker, "AddEmail")
    assert len(on_add_email) == 2000 and max(on_add_email.values()) == 1
    assert "ProducerFenced" not in worker.log_text()
