"""Spans of the hops (OpenTelemetry's in-memory exporter): names, attributes, parents, the context on the wire."""

from __future__ import annotations

import itertools
import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from metrobus_app import Drop, Retry, Settings, create_app, fixed
from metrobus_app.observe.tracing import Tracing

PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_PARENT = "00f067aa0ba902b7"


@pytest.fixture()
def traced():
    """A bus with a busdriver and stops A, B, C, Tired (a passing failure once), Broken, Picky; spans kept in memory."""
    app = create_app(Settings(app_id="unit-trace", store="memory://", retry_in_place_max_ms=50))
    bus = app.bus
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bus.tracing = Tracing(provider.get_tracer("test"), "unit-trace")
    sent: list[tuple[str, bytes | None, bytes, list]] = []

    async def record(topic: str, key: bytes | None, value: bytes, headers: list | None = None) -> None:
        sent.append((topic, key, value, headers or []))

    bus.sender = record
    tired: list[int] = []

    @bus.busdriver()
    def route(record: dict) -> list:
        return record["route"]

    for name in ("A", "B", "C"):
        bus.stop(name)(lambda payload, name=name: {**payload, name: True})

    @bus.stop("Tired", retry=Retry(attempts=3, on=(TimeoutError,), backoff=fixed(0.001)))
    def tired_stop(payload: dict) -> dict:
        tired.append(1)
        if len(tired) == 1:
            raise TimeoutError("once")
        return payload

    @bus.stop("Broken")
    def broken(payload: dict) -> dict:
        raise ValueError("no such account")

    @bus.stop("Picky")
    def picky(payload: dict) -> dict:
        raise Drop("not for us")

    app.finalize()
    app.flow_control.resume()
    bus.sent, bus.exporter = sent, exporter
    return bus


async def put(bus, stop: str, value: bytes, headers: dict | None = None):
    async with bus.agents[stop].test_context() as agent:
        event = await agent.put(value, key=b"k", headers=headers)
        return agent.results[event.message.offset]


async def travel(bus, route: list, headers: dict | None = None) -> None:
    """Push a record through the busdriver, then hand every envelope sent to a stop on to that stop."""
    await put(bus, "busdriver", json.dumps({"route": route}).encode(), headers)
    handed = 0
    while handed < len(bus.sent):
        topic, _, value, kafka = bus.sent[handed]
        handed += 1
        if topic in bus.agents and topic != "busdriver":
            await put(bus, topic, value, dict(kafka))


def spans(bus) -> dict[str, object]:
    return {span.name: span for span in bus.exporter.get_finished_spans()}


async def test_a_four_stop_route_is_one_trace_a_span_per_hop_each_the_child_of_the_one_before(traced):
    await travel(traced, ["A", "B", "C"])
    got = spans(traced)
    names = ["metrobus.stop busdriver", "metrobus.stop A", "metrobus.stop B", "metrobus.stop C"]
    assert list(got) == names
    hops = [got[name] for name in names]
    assert len({span.context.trace_id for span in hops}) == 1
    assert hops[0].parent is None  # the busdriver started the trace
    for parent, child in itertools.pairwise(hops):
        assert child.parent.span_id == parent.context.span_id
    for span in hops:
        assert span.kind == SpanKind.CONSUMER
        assert span.attributes["messaging.system"] == "kafka"
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["messaging.consumer.group.name"] == "unit-trace"
        assert "messaging.kafka.offset" in span.attributes
        assert span.attributes["messaging.destination.partition.id"] == "0"
    assert hops[1].attributes["messaging.destination.name"] == "A"
    assert hops[0].attributes["metrobus.next_stop"] == "A"
    assert hops[3].attributes["metrobus.outcome"] == "delivered"
    message_ids = {span.attributes["messaging.message.id"] for span in hops}
    assert len(message_ids) == 1


async def test_the_context_travels_in_the_envelope_and_the_kafka_headers_and_the_hops_name_the_trace(traced):
    await travel(traced, ["A", "B"])
    got = spans(traced)
    a = got["metrobus.stop A"]
    [(_, _, value, headers)] = [sent for sent in traced.sent if sent[0] == "B"]
    envelope = json.loads(value)
    trace_id, span_id = f"{a.context.trace_id:032x}", f"{a.context.span_id:016x}"
    traceparent = envelope["header"]["trace"]["traceparent"]
    assert traceparent.startswith(f"00-{trace_id}-{span_id}-")  # then the flags
    assert dict(headers)["traceparent"] == traceparent.encode()
    assert envelope["header"]["hops"][-1]["trace_id"] == trace_id
    assert envelope["header"]["hops"][-1]["span_id"] == span_id


async def test_a_producers_traceparent_is_continued_by_the_busdriver(traced):
    headers = {"traceparent": f"00-{PRODUCER_TRACE}-{PRODUCER_PARENT}-01".encode()}
    await travel(traced, ["A"], headers)
    driver = spans(traced)["metrobus.stop busdriver"]
    assert f"{driver.context.trace_id:032x}" == PRODUCER_TRACE
    assert f"{driver.parent.span_id:016x}" == PRODUCER_PARENT


async def test_a_fan_outs_copies_are_children_of_the_step_that_made_them(traced):
    await travel(traced, ["A", "B+C"])
    got = spans(traced)
    a = got["metrobus.stop A"]
    assert got["metrobus.stop B"].parent.span_id == a.context.span_id
    assert got["metrobus.stop C"].parent.span_id == a.context.span_id


async def test_a_dead_letter_is_an_error_span_and_the_letter_names_the_trace(traced):
    await travel(traced, ["A", "Broken"])
    broken = spans(traced)["metrobus.stop Broken"]
    assert broken.status.status_code == StatusCode.ERROR
    assert broken.attributes["error.type"] == "ValueError"
    assert broken.attributes["metrobus.outcome"] == "dead_lettered"
    [(_, _, letter, _)] = [sent for sent in traced.sent if sent[0] == "Error"]
    assert json.loads(letter)["trace_id"] == f"{broken.context.trace_id:032x}"


async def test_a_drop_says_why(traced):
    await travel(traced, ["Picky"])
    picky = spans(traced)["metrobus.stop Picky"]
    assert picky.attributes["metrobus.outcome"] == "dropped"
    assert picky.attributes["metrobus.drop_reason"] == "not for us"
    assert picky.status.status_code == StatusCode.UNSET


async def test_a_retry_in_place_is_a_span_of_its_own_inside_the_hop(traced):
    await travel(traced, ["Tired", "A"])
    got = spans(traced)
    hop, retry = got["metrobus.stop Tired"], got["metrobus.retry Tired"]
    assert retry.parent.span_id == hop.context.span_id
    assert got["metrobus.stop A"].parent.span_id == retry.context.span_id  # the attempt that went on
    assert hop.attributes["metrobus.outcome"] == "forwarded"


async def test_without_tracing_nothing_is_added_to_the_wire(traced):
    traced.tracing = None
    await travel(traced, ["A", "B"])
    assert traced.exporter.get_finished_spans() == ()
    for _, _, value, headers in traced.sent:
        assert "trace" not in json.loads(value)["header"]
        assert headers == []


async def test_the_log_lines_about_a_failed_message_name_its_trace(traced, caplog):
    await travel(traced, ["Broken"])
    broken = spans(traced)["metrobus.stop Broken"]
    trace_id = f"{broken.context.trace_id:032x}"
    lines = [record.getMessage() for record in caplog.records if "Broken" in record.getMessage()]
    assert lines and all(f"(trace {trace_id})" in line for line in lines), lines
