"""Integration fixtures: a fresh broker per test, real worker processes, topic readers.

The broker is Apache Kafka, a single KRaft node of ``METROBUS_KAFKA_VERSION`` (4.4.0 unless set;
``metrobus_app.brokers.kafka``), unless ``METROBUS_TEST_BROKER=tansu``: then Tansu, the demo's
embedded broker. The test bodies are the same; tests marked ``tansu`` are the ones run there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from metrobus_app.brokers import BROKERS, EmbeddedBroker, KafkaBroker, free_port, local_broker

TEST_BROKER = os.environ.get("METROBUS_TEST_BROKER", "kafka")
if TEST_BROKER not in BROKERS:
    raise pytest.UsageError(f"METROBUS_TEST_BROKER={TEST_BROKER!r}: use {' or '.join(BROKERS)}")
Broker = EmbeddedBroker | KafkaBroker

ROOT = Path(__file__).resolve().parents[2]
FAUST = [sys.executable, "-m", "faust", "-A", "metrobus_app"]
pytestmark = pytest.mark.integration


def new_broker(*, port: int | None = None, log_path: Path | None = None) -> Broker:
    """A broker of the kind this run tests on (METROBUS_TEST_BROKER), not yet started."""
    return local_broker(TEST_BROKER, port=port, log_path=log_path)


def only_on(kind: str, why: str) -> pytest.MarkDecorator:
    """Skip a test unless the run is on broker ``kind``; ``why`` names what the other broker lacks."""
    return pytest.mark.skipif(kind != TEST_BROKER, reason=f"on {TEST_BROKER}: {why}")


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    with new_broker(log_path=tmp_path / "broker.log") as running:
        yield running


# The recovery tests' stops (recovery_stops.py), what they did written to ``records``.
@pytest.fixture()
def records(tmp_path: Path) -> Path:
    """Where the test stops write what they did (failed once, undone)."""
    path = tmp_path / "records"
    path.mkdir()
    return path


@pytest.fixture()
def extra(records: Path) -> dict[str, str]:
    return {
        "METROBUS_MODULES": "agents,tests.integration.recovery_stops",
        "METROBUS_RETRY_DELAY_TIERS": "1,2",
        "METROBUS_TEST_RECOVERY_DIR": str(records),
    }


def bus_env(broker_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METROBUS_")}
    env.update(METROBUS_BROKER=broker_url, METROBUS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``faust -A metrobus_app ARGS`` to completion and return what it printed."""
    return subprocess.run([*FAUST, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@dataclass
class Worker:
    """A ``faust -A metrobus_app worker`` process with its own data dir, web port and log."""

    env: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*FAUST, "worker", "-l", "info", "--web-port", str(self.port)],
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, timeout: float = 90) -> Worker:
        deadline = time.monotonic() + timeout
        while "[^Worker]: Ready" not in self.log_text():
            assert self.process is not None and self.process.poll() is None, f"worker died:\n{self.log_text()[-3000:]}"
            assert time.monotonic() < deadline, f"worker not ready in {timeout} s:\n{self.log_text()[-3000:]}"
            time.sleep(0.2)
        return self

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return json.load(response)

    def wait_for(self, path: str, check, timeout: float = 60) -> dict:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            answer = self.get(path)
            if check(answer):
                return answer
            assert time.monotonic() < deadline, f"{path} never satisfied the check; last answer: {answer}"
            time.sleep(0.3)

    def wait_caches(self, want: dict[str, int], timeout: float = 60) -> None:
        """Wait until the worker's caches have caught up and hold ``want`` entries."""

        def holds(got: dict) -> bool:
            return all(c["ready"] for c in got.values()) and {k: c["entries"] for k, c in got.items()} == want

        self.wait_for("/metrobus/caches/", holds, timeout)

    def log_text(self) -> str:
        """What this run of the worker logged (a restart appends to the same file)."""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def stop(self, timeout: float = 20) -> bool:
        """SIGTERM, as an operator stops a worker; False when it had to be killed after ``timeout`` s.

        ``stopped_in`` is how long it took to end (seconds), ``returncode`` its exit status.
        """
        graceful = True
        self.stopped_in: float | None = None
        if self.process is not None and self.process.poll() is None:
            began = time.monotonic()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
                self.stopped_in = time.monotonic() - began
            except subprocess.TimeoutExpired:
                graceful = False
                self.process.kill()
                self.process.wait()
        self.log.close()
        return graceful


@dataclass
class WorkerFactory:
    broker: Broker
    tmp_path: Path
    started: list[Worker] = field(default_factory=list)

    def __call__(self, name: str = "worker", **env: str) -> Worker:
        worker = Worker(
            bus_env(self.broker.url, self.tmp_path / f"{name}-data", **env),
            self.tmp_path / f"{name}.log",
            free_port(),
        )
        self.started.append(worker.start())
        return worker


@pytest.fixture()
def workers(broker: Broker, tmp_path: Path) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(broker, tmp_path)
    yield factory
    hung = [worker.log_path for worker in factory.started if not worker.stop()]
    assert not hung, f"workers did not stop within 20 s of SIGTERM: {hung}"


# Three Apache Kafka nodes (replication 3, min.insync.replicas 2) and workers on them.
@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[KafkaBroker]:
    with KafkaBroker(3, log_path=tmp_path / "cluster.log") as running:
        yield running


@pytest.fixture()
def cluster_workers(cluster: KafkaBroker, tmp_path: Path) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(cluster, tmp_path)
    yield factory
    for worker in factory.started:
        worker.stop()


def read_topic(broker: Broker, topic: str, expect: int, *, timeout: float = 60, settle: float = 2.0) -> list:
    """Read a topic from the start, without joining a group: every record's (key, value).

    Waits until ``expect`` records arrived, then reads on to the end the topic has then (a
    topic holding duplicates is longer than ``expect``), and ``settle`` seconds more, so that
    records beyond the expected ones would be seen too.
    """
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while not partitions:
            partitions = consumer.partitions_for_topic(topic)
            assert partitions or time.monotonic() < deadline, f"topic {topic} never appeared"
            time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        records: list = []
        ends = settled_at = None
        while True:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend((r.key, r.value) for r in batch)
            now = time.monotonic()
            if len(records) >= expect:
                ends = ends or consumer.end_offsets(tps)
                if any(consumer.position(tp) < end for tp, end in ends.items()) and now < deadline:
                    continue
                settled_at = settled_at or now + settle
                if now >= settled_at:
                    return records
            elif now > deadline:
                return records
    finally:
        consumer.close()


def make_and_warm(env: dict[str, str], data: Path, accounts: int, seed: int) -> subprocess.CompletedProcess[str]:
    """``make-data`` into ``data``, then ``warm`` both caches from it; return the warm's result."""
    made = run_cli(env, "make-data", "--out", str(data), "--accounts", str(accounts), "--seed", str(seed))
    assert made.returncode == 0, made.stderr
    warmed = run_cli(env, "warm", "--emails", str(data / "emails.dat"), "--whitelist", str(data / "whitelist.dat"))
    assert warmed.returncode == 0, warmed.stderr
    return warmed


def run_0_0_x_stop(
    bootstrap: str, topic: str, stop: threading.Event, work: Callable[[dict], dict | None] = lambda m: m
) -> None:
    """A stop as metrobus 0.0.x wrote it (kafka-python): ``work`` the message, pop route[-1],
    append it to historical_route, send the JSON on; ``work`` returning None drops it."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    while not (partitions := consumer.partitions_for_topic(topic)):
        time.sleep(0.1)
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    while not stop.is_set():
        for batch in consumer.poll(timeout_ms=100).values():
            for record in batch:
                message = work(json.loads(record.value))
                if message is None:
                    continue
                next_topic = message["header"]["route"].pop()
                message["header"]["historical_route"].append(next_topic)
                producer.send(next_topic, key=record.key, value=json.dumps(message).encode())
        producer.flush()
    consumer.close()
    producer.close()


def produce(broker: Broker, topic: str, values: list[tuple[bytes | None, bytes | None]]) -> None:
    """Send raw (key, value) pairs, as any Kafka client could."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for key, value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
