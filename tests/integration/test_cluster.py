"""A three-broker Apache Kafka cluster loses the broker that leads most of the bus's partitions.

Replication 3, ``min.insync.replicas=2`` (the cluster's default), producers with ``acks=all``
(Faust's default), two workers. The leader of most stop-topic partitions is killed with
``kill -9`` while records flow, and started again later. Nothing may be lost, and the bus must
go on delivering while the broker is down; how long delivery paused is measured and noted.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from kafka.admin import KafkaAdminClient

from .conftest import bus_env, only_on
from .test_reliability import note, received, reconcile, start_push, wait_until, warm_demo_caches

pytestmark = [
    pytest.mark.integration,
    pytest.mark.guarantee,
    only_on("kafka", "a three-broker cluster is Apache Kafka's; Tansu runs one in-memory node, unreplicated"),
]

STOP_TOPICS = ["Source", "AddEmail", "WhiteList", "Log"]
REPLICATED = {"METROBUS_REPLICATION": "3"}
PUSHED, RATE = 12_000, 400


def partition_leaders(bootstrap: str, topics: list[str]) -> Counter[int]:
    """How many partitions of ``topics`` each node leads."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return Counter(p["leader_id"] for topic in admin.describe_topics(topics) for p in topic["partitions"])
    finally:
        admin.close()


def replication_of(bootstrap: str, topics: list[str]) -> set[int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {len(p["replica_nodes"]) for topic in admin.describe_topics(topics) for p in topic["partitions"]}
    finally:
        admin.close()


def delivered(workers: list) -> int:
    return sum(received(worker, "Log") for worker in workers)


def state(pusher, workers: list) -> str:
    """What a stalled run looks like: the pusher's exit and output, what each worker's stops received."""
    code = pusher.poll()
    pushing = "running" if code is None else f"exited {code}: {pusher.stderr.read().decode()[-2000:]}"
    stops = [{stop: received(worker, stop) for stop in STOP_TOPICS} for worker in workers]
    return f"pusher {pushing}; received by worker: {stops}"


def test_killing_the_leading_broker_loses_nothing_and_delivery_goes_on(cluster, cluster_workers, tmp_path):
    env = bus_env(cluster.url, tmp_path / "cli", **REPLICATED)
    warm_demo_caches(env, tmp_path)
    running = [cluster_workers(name, **REPLICATED) for name in ("a", "b")]
    for worker in running:
        worker.wait_ready().wait_caches({"emails": 1600, "whitelist": 800})
    assert replication_of(cluster.bootstrap, STOP_TOPICS) == {3}

    pusher = start_push(env, PUSHED, rate=RATE)
    wait_until(lambda: delivered(running) >= 1000, 90, "1000 deliveries", lambda: state(pusher, running))
    leaders = partition_leaders(cluster.bootstrap, STOP_TOPICS)
    victim, led = leaders.most_common(1)[0]
    cluster.kill(victim)
    killed_at = time.monotonic()

    # Sample delivery while the broker is down: the longest stretch without a new delivery is the pause.
    samples = [(killed_at, delivered(running))]
    while time.monotonic() - killed_at < 25:
        time.sleep(0.25)
        samples.append((time.monotonic(), delivered(running)))
    moved = [t for (t, n), (_, before) in zip(samples[1:], samples, strict=False) if n > before]
    assert moved, "nothing was delivered while the broker was down"
    pause = max(b - a for a, b in zip([killed_at, *moved], moved, strict=False))
    delivered_while_down = samples[-1][1] - samples[0][1]
    assert delivered_while_down > 0

    cluster.restart(victim)
    assert pusher.wait(timeout=180) == 0, pusher.stderr.read() if pusher.stderr else ""
    result = reconcile(env, wait=180)
    assert result["pushed"] == PUSHED
    assert result["unaccounted"] == 0, result["unaccounted_ids"][:10]
    assert result["dead_lettered"] == 0
    assert all(worker.process.poll() is None for worker in running), "a worker gave up"
    note(
        "cluster_leader_kill_9",
        {
            "pushed": PUSHED,
            "rate_per_s": RATE,
            "killed_node": victim,
            "partitions_it_led": led,
            "of_partitions": sum(leaders.values()),
            "longest_pause_s": round(pause, 2),
            "delivered_while_down_25s": delivered_while_down,
            "unaccounted": result["unaccounted"],
            "duplicate_messages": result["duplicates"],
        },
    )


def test_every_topic_of_the_bus_is_replicated_three_times(cluster, cluster_workers, tmp_path):
    """The changelogs of the caches and the bus's own topics too, not only the stop topics."""
    env = bus_env(cluster.url, tmp_path / "cli", **REPLICATED)
    warm_demo_caches(env, tmp_path)
    worker = cluster_workers("a", **REPLICATED)
    worker.wait_ready().wait_caches({"emails": 1600, "whitelist": 800})
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        topics = [t for t in admin.list_topics() if not t.startswith("__")]
    finally:
        admin.close()
    assert set(STOP_TOPICS) <= set(topics)
    assert replication_of(cluster.bootstrap, topics) == {3}, topics
