"""One trace per message (issue 20), end to end: two real workers export over OTLP/HTTP to a receiver in the test.

Route busdriver -> AddEmail -> WhiteList -> Log, with WhiteList a 0.0.x stop (a plain Kafka
client, declared external) in between: it keeps ``header.trace`` without knowing it, so
Log's span is the child of AddEmail's, a gap in the spans, not a broken trace. The workers
share the stop topics' partitions, and each record enters Source at a partition of its own
choosing, not its key's, so a message's hops go from one worker to the other.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import pytest
from kafka import KafkaProducer

from tables.files import ReadReport, read_emails

from .conftest import Worker, bus_env, read_topic, run_0_0_x_stop, run_cli
from .otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.integration

PARTITIONS, ACCOUNTS, MESSAGES = 4, 500, 40
SPAN_KIND_CONSUMER = 5  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2
HOPS = ("busdriver", "AddEmail", "Log")  # the spans of a message; WhiteList (0.0.x) has none
PRODUCER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
CONTINUED = (0, 1)  # records sent with a producer's traceparent: the busdriver continues its trace


@pytest.fixture()
def receiver():
    """Requested before ``workers``, so it outlives them: their last export at SIGTERM still finds it."""
    with otlp_receiver() as running:
        yield running


def url(worker: Worker) -> str:
    return f"http://127.0.0.1:{worker.port}"


def shared_assignment(workers: list[Worker], topics: tuple[str, ...], timeout: float = 60):  # type: ignore[no-untyped-def]
    """Wait until every worker sees one assignment in which each holds partitions of each of ``topics``."""
    deadline = time.monotonic() + timeout
    while True:
        seen = [worker.get("/router/topics") for worker in workers]
        hosts = {url(w) for w in workers}
        if (
            all(view == seen[0] for view in seen)
            and set(seen[0]) == hosts
            and all(seen[0][host].get(topic) for host in hosts for topic in topics)
        ):
            return {host: {topic: set(seen[0][host][topic]) for topic in topics} for host in hosts}
        assert time.monotonic() < deadline, f"the group never shared {topics} between the workers; last: {seen}"
        time.sleep(0.3)


def whole(spans: list[ReceivedSpan], ids: set[str]) -> bool:
    """Every message has a span for each of its hops."""
    names: dict[str, set[str]] = defaultdict(set)
    for span in spans:
        names[span.attributes.get("messaging.message.id", "")].add(span.name)
    return all(names[i] >= {f"metrobus.stop {hop}" for hop in HOPS} for i in ids)


def test_one_whole_trace_per_message_across_two_workers_and_a_0_0_x_stop(
    receiver: OtlpReceiver, broker, workers, tmp_path
):
    env = bus_env(broker.url, tmp_path / "cli", METROBUS_PARTITIONS=str(PARTITIONS))
    data = tmp_path / "data"
    made = run_cli(env, "make-data", "--out", str(data), "--accounts", str(ACCOUNTS), "--seed", "9")
    assert made.returncode == 0, made.stderr
    warmed = run_cli(env, "warm", "--emails", str(data / "emails.dat"))
    assert warmed.returncode == 0, warmed.stderr
    accounts = sorted(int(account) for account, _ in read_emails(data / "emails.dat", ReadReport(data)))

    traced = {
        "METROBUS_PARTITIONS": str(PARTITIONS),
        "METROBUS_STOPS": "busdriver,AddEmail,Log",
        "METROBUS_EXTERNAL_STOPS": "WhiteList",
        "METROBUS_TRACING": "on",
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": "metrobus-tracing-test",
    }
    by_name = {
        name: workers(name, **traced, OTEL_RESOURCE_ATTRIBUTES=f"service.instance.id=worker-{name}")
        for name in ("a", "b")
    }
    for worker in by_name.values():
        worker.wait_ready()
    shares = shared_assignment(list(by_name.values()), ("Source", "AddEmail", "Log"))
    for worker in by_name.values():
        worker.wait_caches({"emails": 400, "whitelist": 0})
        assert "metrobus.WhiteList" not in worker.log_text()

    stop = threading.Event()
    legacy = threading.Thread(target=run_0_0_x_stop, args=(broker.bootstrap, "WhiteList", stop), daemon=True)
    legacy.start()
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for n in range(MESSAGES):
            account = accounts[(n * 37) % len(accounts)]
            record = {"x": n, "message_type_code": "ALTABC", "account_number": account}
            headers = [("traceparent", f"00-{PRODUCER_TRACE[:-2]}{n:02x}-{PRODUCER_SPAN}-01".encode())]
            producer.send(
                "Source",
                key=str(account).encode(),
                value=json.dumps(record).encode(),
                partition=n % PARTITIONS,
                headers=headers if n in CONTINUED else None,
            )
        producer.flush()
        producer.close()
        delivered = [json.loads(value) for _, value in read_topic(broker, "Log", MESSAGES)]
    finally:
        stop.set()
        legacy.join(timeout=10)

    # What reached Log went through the 0.0.x stop, which kept the header fields it does not know.
    assert sorted(envelope["payload"]["x"] for envelope in delivered) == list(range(MESSAGES))
    envelopes = {envelope["header"]["id"]: envelope for envelope in delivered}
    assert len(envelopes) == MESSAGES
    for envelope in delivered:
        assert envelope["header"]["historical_route"] == ["AddEmail", "WhiteList", "Log"]
        assert [hop["stop"] for hop in envelope["header"]["hops"]] == ["busdriver", "AddEmail"]

    spans = receiver.wait_for(lambda got: whole(got, set(envelopes)))
    assert not receiver.errors
    ours = [span for span in spans if span.name.startswith("metrobus.")]
    assert len(ours) == len(spans), f"spans not of the bus: {[s.name for s in spans if s not in ours]}"
    assert len(ours) == len(HOPS) * MESSAGES, sorted(s.name for s in ours)  # a span per hop, none twice
    assert {span.scope for span in ours} == {"metrobus"}

    pids = {f"{worker.process.pid}": f"worker-{name}" for name, worker in by_name.items()}  # type: ignore[union-attr]
    hosts = {f"worker-{name}": url(worker) for name, worker in by_name.items()}
    per_message: dict[str, dict[str, ReceivedSpan]] = defaultdict(dict)
    for span in ours:
        per_message[span.attributes["messaging.message.id"]][span.attributes["metrobus.stop"]] = span
    assert set(per_message) == set(envelopes)

    crossing = 0
    for message_id, envelope in envelopes.items():
        hops = per_message[message_id]
        assert set(hops) == set(HOPS), (message_id, sorted(hops))
        chain = [hops[stop] for stop in HOPS]
        trace_id = chain[0].trace_id
        x = envelope["payload"]["x"]

        # One trace, each hop the child of the one before; Log's parent is AddEmail: the 0.0.x stop is a gap.
        assert {span.trace_id for span in chain} == {trace_id}, (message_id, chain)
        if x in CONTINUED:
            assert trace_id == f"{PRODUCER_TRACE[:-2]}{x:02x}" and chain[0].parent == PRODUCER_SPAN, chain[0]
        else:
            assert chain[0].parent == "", f"the busdriver's span of {message_id} is no root: {chain[0]}"
        assert chain[1].parent == chain[0].span_id, (message_id, chain)
        assert chain[2].parent == chain[1].span_id, (message_id, chain)
        assert [span.start_ns for span in chain] == sorted(span.start_ns for span in chain), chain
        assert all(span.end_ns >= span.start_ns for span in chain)

        # The trace id (and each hop's span) as the envelope's hops tell them, and header.trace past the 0.0.x stop.
        assert [(hop["trace_id"], hop["span_id"]) for hop in envelope["header"]["hops"]] == [
            (trace_id, chain[0].span_id),
            (trace_id, chain[1].span_id),
        ], (message_id, envelope["header"]["hops"])
        version, carried_trace, carried_parent, flags = envelope["header"]["trace"]["traceparent"].split("-")
        assert (version, carried_trace, carried_parent) == ("00", trace_id, chain[1].span_id), envelope["header"]
        assert int(flags, 16) & 1, f"header.trace says not sampled: {envelope['header']['trace']}"

        # What each span says of its hop.
        for span, topic, outcome in zip(
            chain, ("Source", "AddEmail", "Log"), ("forwarded", "forwarded", "delivered"), strict=True
        ):
            assert span.kind == SPAN_KIND_CONSUMER and span.status_code != STATUS_ERROR, span
            attributes = span.attributes
            assert attributes["messaging.system"] == "kafka", span
            assert attributes["messaging.destination.name"] == topic, span
            assert attributes["metrobus.outcome"] == outcome, span
            assert isinstance(attributes["messaging.kafka.offset"], int), span
            assert span.resource["service.name"] == "metrobus-tracing-test", span.resource
            # Made by the worker that holds the partition it came from.
            instance = span.resource["service.instance.id"]
            partition = int(attributes["messaging.destination.partition.id"])
            assert partition in shares[hosts[instance]][topic], (span, shares)
        assert chain[0].attributes["messaging.destination.partition.id"] == str(x % PARTITIONS)
        assert chain[0].attributes["metrobus.next_stop"] == "AddEmail"
        assert chain[1].attributes["metrobus.next_stop"] == "WhiteList"

        # The hops' worker (host:pid) is the process whose resource the span carries.
        for hop, span in zip(envelope["header"]["hops"], chain[:2], strict=True):
            assert pids[hop["worker"].rsplit(":", 1)[1]] == span.resource["service.instance.id"], (hop, span)
        crossing += len({span.resource["service.instance.id"] for span in chain}) > 1

    assert len({hops["busdriver"].trace_id for hops in per_message.values()}) == MESSAGES  # one trace per message
    assert {span.resource["service.instance.id"] for span in ours} == {"worker-a", "worker-b"}
    assert crossing, "no message's trace went from one worker to the other"
