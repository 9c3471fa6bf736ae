"""The brokers the project starts itself: what each is configured with, before any is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrobus_app.brokers import EmbeddedBroker, KafkaBroker, local_broker
from metrobus_app.brokers.kafka import KafkaNode, cluster_id, pom
from metrobus_app.config.settings import Settings
from metrobus_app.errors import ConfigError
from metrobus_app.runtime.broker_health import broker_kind, fetch_wait_ms


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_a_cluster_id_is_22_url_safe_characters_and_never_an_option():
    ids = [cluster_id() for _ in range(2000)]
    assert all(len(drawn) == 22 and not drawn.startswith("-") for drawn in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("version", "backend"),
    [("3.9.1", "<artifactId>reload4j</artifactId>"), ("4.1.1", "<artifactId>log4j-core</artifactId>")],
)
def test_the_maven_project_asks_for_the_broker_and_a_logging_backend(version, backend):
    text = pom(version)
    assert f"<artifactId>kafka_2.13</artifactId><version>{version}</version>" in text
    assert backend in text


def test_one_node_is_broker_and_controller_replicated_once():
    node = KafkaNode(1, 19092, 19093, Path("/tmp/n1"))
    got = properties(node.properties("1@127.0.0.1:19093", nodes=1))
    assert got["process.roles"] == "broker,controller"
    assert got["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert got["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert got["log.dirs"] == "/tmp/n1/data"
    assert got["offsets.topic.replication.factor"] == got["transaction.state.log.replication.factor"] == "1"
    assert got["min.insync.replicas"] == got["transaction.state.log.min.isr"] == "1"
    assert got["group.initial.rebalance.delay.ms"] == "0"


def test_a_cluster_of_three_replicates_three_times_and_needs_two_in_sync(tmp_path):
    broker = KafkaBroker(3, folder=tmp_path)
    ports = {port for node in broker.nodes for port in (node.port, node.controller_port)}
    assert len(ports) == 6, "every node gets its own two ports"
    assert broker.bootstrap == ",".join(f"127.0.0.1:{node.port}" for node in broker.nodes)
    assert broker.url == ";".join(f"kafka://127.0.0.1:{node.port}" for node in broker.nodes)
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in broker.nodes)
    got = properties(broker.nodes[2].properties(voters, nodes=3))
    assert got["node.id"] == "3"
    assert got["controller.quorum.voters"] == voters
    assert got["default.replication.factor"] == got["offsets.topic.replication.factor"] == "3"
    assert got["min.insync.replicas"] == got["transaction.state.log.min.isr"] == "2"


def test_a_broker_is_chosen_by_name_and_an_unknown_name_is_one_line():
    assert isinstance(local_broker("tansu"), EmbeddedBroker)
    kafka = local_broker("kafka", port=19555)
    assert isinstance(kafka, KafkaBroker) and kafka.port == 19555 and kafka.kind == "kafka"
    kafka.stop()  # removes the temporary folder it made
    assert not kafka.folder.exists()
    with pytest.raises(ConfigError, match=r"^unknown broker 'redpanda': use tansu or kafka$"):
        local_broker("redpanda")


@pytest.mark.parametrize(
    ("cluster_id", "kind", "wait"),
    [("tansu_cluster", "tansu", 10), ("4JqYqDvlSG-e7ylo8yi7xQ", "kafka", 500), (None, "kafka", 500)],
)
def test_a_worker_knows_its_broker_by_the_cluster_id_and_waits_as_suits_it(cluster_id, kind, wait):
    assert broker_kind(cluster_id) == kind
    assert fetch_wait_ms(Settings(), kind) == wait
    assert fetch_wait_ms(Settings(fetch_wait_ms=25), kind) == 25  # a value set wins on either broker


def test_a_kafka_node_gets_a_port_of_its_own_for_each_listener():
    from metrobus_app.brokers.kafka import KafkaBroker
    from metrobus_app.brokers.ports import free_ports

    assert len(set(free_ports(50))) == 50
    cluster = KafkaBroker(3)
    ports = [p for node in cluster.nodes for p in (node.port, node.controller_port)]
    assert len(set(ports)) == 6
    cluster.folder.rmdir()
