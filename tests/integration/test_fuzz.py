"""Hostile input never stops a worker: generated malformed values on every stop's topic and on Source.

Hypothesis draws batches of bad values (not UTF-8, not JSON, JSON that is not an object, no
value, above METROBUS_MAX_MESSAGE_BYTES, nested deeper than the parser goes, headers of the
wrong type, routes of thousands of stops, payloads a stop chokes on) and sends them, with one
valid message, to one real worker. After each batch the valid message must have gone on, and
every bad one must be in the dead-letter topic, with the stop and a reason.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition

from metrobus_app import Envelope
from metrobus_app.brokers import free_port

from .conftest import Broker, Worker, bus_env, new_broker, produce

pytestmark = pytest.mark.integration

MAX_BYTES = 20_000
STOPS = ["AddEmail", "WhiteList", "Log"]
STOP_OF_TOPIC = {"Source": "busdriver", **{s: s for s in STOPS}}


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def envelope_with(header: object = None, payload: object = None, **fields: object) -> bytes:
    value = {"header": {"route": ["Log"], "historical_route": ["AddEmail"], **fields}, "payload": payload or {}}
    if header is not None:
        value["header"] = header
    return json.dumps(value).encode()


def arriving(payload: object, route: list[str]) -> bytes:
    envelope = Envelope.stamp(payload, route)
    envelope.pop_next()
    return envelope.to_bytes()


# Values that are bad wherever they arrive (Source included).
anywhere = st.one_of(
    st.binary(min_size=1, max_size=64).filter(lambda b: not _utf8(b)),
    st.text(min_size=1, max_size=64).filter(lambda t: not _json(t)).map(str.encode),
    st.one_of(st.lists(st.integers(), max_size=4), st.integers(), st.text(max_size=16), st.booleans(), st.none())
    .map(json.dumps)
    .map(str.encode),
    st.just(None),
    st.integers(MAX_BYTES + 1, 3 * MAX_BYTES).map(lambda n: b'{"header":{"route":[]},"payload":"' + b"x" * n + b'"}'),
    st.integers(2_000, 40_000).map(lambda depth: b"[" * depth + b"]" * depth),
)
# Values that are bad envelopes on a stop's topic.
bad_envelope = st.one_of(
    st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=8), st.integers()).map(
        lambda h: envelope_with(header=h)
    ),
    st.one_of(st.integers(), st.text(max_size=8), st.lists(st.integers(), min_size=1, max_size=3)).map(
        lambda r: envelope_with(route=r)
    ),
    st.integers(101, 5_000).map(lambda n: envelope_with(route=["Log"] * n)),
    st.one_of(st.integers(), st.lists(st.text(max_size=3), max_size=2)).map(lambda i: envelope_with(id=i)),
    st.one_of(st.integers(max_value=0), st.text(max_size=4), st.floats(allow_nan=False)).map(
        lambda m: envelope_with(max_hops=m)
    ),
    st.one_of(st.integers(max_value=-1), st.text(max_size=4)).map(lambda r: envelope_with(replays=r)),
    st.one_of(st.text(max_size=4), st.integers(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)).map(
        lambda h: envelope_with(hops=h)
    ),
    st.just(b'{"header": {"route": []}}'),
)
# Well-formed envelopes whose payload the stop's own code chokes on.
not_a_record = st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=10))
choking = st.one_of(
    st.tuples(st.just("AddEmail"), st.one_of(not_a_record, st.just({"no_account": 1}))),
    st.tuples(st.just("WhiteList"), not_a_record),
).map(lambda tp: (tp[0], arriving(tp[1], [tp[0], "Log"])))

bad_values = st.one_of(
    st.tuples(st.sampled_from(["Source", *STOPS]), anywhere),
    st.tuples(st.sampled_from(STOPS), bad_envelope),
    choking,
)


class Reader:
    """Reads the dead-letter topic and the Archive topic as they grow, by key."""

    def __init__(self, broker: Broker) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
        partitions = []
        for topic in ("Error", "Archive"):
            deadline = time.monotonic() + 30
            while not self.consumer.partitions_for_topic(topic):
                assert time.monotonic() < deadline, f"no topic {topic}"
                time.sleep(0.2)
            partitions += [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning()
        self.seen: dict[tuple[str, bytes], dict] = {}

    def wait_for(self, wanted: set[tuple[str, bytes]], timeout: float = 40) -> dict[tuple[str, bytes], dict]:
        deadline = time.monotonic() + timeout
        while not wanted <= self.seen.keys():
            assert time.monotonic() < deadline, f"never arrived: {sorted(wanted - self.seen.keys())[:5]}"
            for tp, records in self.consumer.poll(timeout_ms=200).items():
                for record in records:
                    self.seen[(tp.topic, record.key)] = json.loads(record.value)
        return {k: self.seen[k] for k in wanted}


@pytest.fixture(scope="module")
def bus(tmp_path_factory) -> Iterator[tuple[Broker, Worker, Reader]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with new_broker(log_path=tmp / "broker.log") as broker:
        env = bus_env(
            broker.url,
            tmp / "data",
            METROBUS_MAX_MESSAGE_BYTES=str(MAX_BYTES),
            METROBUS_MAX_ROUTE_STOPS="100",
            METROBUS_EXTERNAL_STOPS="Archive",
        )
        worker = Worker(env, tmp / "worker.log", free_port()).start().wait_ready()
        try:
            yield broker, worker, Reader(broker)
        finally:
            worker.stop()


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(bad_values, min_size=1, max_size=8))
def test_malformed_values_are_dead_lettered_with_a_reason_and_the_worker_goes_on(bus, batch):
    broker, worker, reader = bus
    sent: dict[bytes, str] = {}
    by_topic: dict[str, list] = {}
    for topic, value in batch:
        key = uuid.uuid4().hex.encode()
        sent[key] = topic
        by_topic.setdefault(topic, []).append((key, value))
    for topic, values in by_topic.items():
        produce(broker, topic, values)
    good = uuid.uuid4().hex.encode()
    produce(broker, "Log", [(good, arriving({"ok": True}, ["Log", "Archive"]))])

    found = reader.wait_for({("Error", key) for key in sent} | {("Archive", good)})
    assert found[("Archive", good)]["payload"] == {"ok": True}
    for key, topic in sent.items():
        letter = found[("Error", key)]
        assert letter["stop"] == STOP_OF_TOPIC[topic]
        assert letter["error"] and letter["message"], letter
    assert worker.process.poll() is None
