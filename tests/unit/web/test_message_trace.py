"""``/metrobus/messages/{id}`` names the trace of a traced message: from its hops, or its copies' for a fan-out.

The messages go through a fresh app's stops (Faust's agent test context) with tracing on and
the spans kept in memory; the view is called as Faust calls it, on this worker's fates only.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from metrobus_app import Settings, create_app
from metrobus_app.observe.tracing import Tracing
from metrobus_app.web.views import MessageView, trace_id, with_trace_ids

LOCAL = SimpleNamespace(query={"local": "1"})


def make_app(*, traced: bool):
    """A fresh app with a busdriver and stops A, B, C, Broken; its sends recorded, its spans in memory."""
    app = create_app(Settings(app_id="unit-web-trace", store="memory://"))
    bus = app.bus
    exporter = InMemorySpanExporter()
    if traced:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        bus.tracing = Tracing(provider.get_tracer("test"), "unit-web-trace")
    sent: list[tuple[str, bytes]] = []

    async def record(topic: str, key: bytes | None, value: bytes, headers: list | None = None) -> None:
        sent.append((topic, value))

    bus.sender = record

    @bus.busdriver()
    def route(record: dict) -> list:
        return record["route"]

    for name in ("A", "B", "C"):
        bus.stop(name)(lambda payload, name=name: {**payload, name: True})

    @bus.stop("Broken")
    def broken(payload: dict) -> dict:
        raise ValueError("no such account")

    app.finalize()
    app.flow_control.resume()
    app.sent, app.exporter = sent, exporter
    return app


@pytest.fixture()
def traced():
    return make_app(traced=True)


async def put(app, stop: str, value: bytes):
    async with app.bus.agents[stop].test_context() as agent:
        event = await agent.put(value, key=b"k")
        return agent.results[event.message.offset]


async def travel(app, route: list) -> str:
    """A record through the busdriver and every stop it is sent to; the message id."""
    outcome = await put(app, "busdriver", json.dumps({"route": route}).encode())
    handed = 0
    while handed < len(app.sent):
        topic, value = app.sent[handed]
        handed += 1
        if topic in app.bus.agents and topic != "busdriver":
            await put(app, topic, value)
    return outcome.envelope.id


async def look_up(app, message_id: str) -> dict:
    answer = await MessageView(app, app.web).get(LOCAL, message_id)
    assert answer.status == 200
    return json.loads(answer.body)


def the_trace(app) -> str:
    [trace] = {f"{span.context.trace_id:032x}" for span in app.exporter.get_finished_spans()}
    return trace


async def test_a_delivered_message_names_its_trace_and_every_hop_sent_on_names_it_too(traced):
    message_id = await travel(traced, ["A", "B"])
    fate = await look_up(traced, message_id)
    assert fate["status"] == "delivered"
    assert fate["trace_id"] == the_trace(traced)
    sent_on = [hop for hop in fate["hops"] if "forwarded" in hop]
    assert [hop["stop"] for hop in sent_on] == ["busdriver", "A"]
    assert {hop["trace_id"] for hop in sent_on} == {fate["trace_id"]}
    assert all(len(hop["span_id"]) == 16 for hop in sent_on)


async def test_a_message_on_its_way_names_its_trace(traced):
    outcome = await put(traced, "busdriver", json.dumps({"route": ["A", "B"]}).encode())
    fate = await look_up(traced, outcome.envelope.id)
    assert fate["status"] == "in_transit"
    assert fate["trace_id"] == the_trace(traced)


async def test_a_fan_out_names_the_trace_at_the_top_and_in_each_copy(traced):
    message_id = await travel(traced, ["A", "B+C"])
    fate = await look_up(traced, message_id)
    copies = fate["copies"]
    assert len(copies) == 2
    trace = the_trace(traced)  # the copies continue the message's trace, each with spans of its own
    assert [copy["trace_id"] for copy in copies] == [trace, trace]
    assert fate["trace_id"] == trace


async def test_a_dead_lettered_message_names_its_trace(traced):
    message_id = await travel(traced, ["A", "Broken"])
    fate = await look_up(traced, message_id)
    assert fate["status"] == "dead_lettered"
    assert fate["trace_id"] == the_trace(traced)
    [letter] = [json.loads(value) for topic, value in traced.sent if topic == "Error"]
    assert letter["trace_id"] == fate["trace_id"]


async def test_without_tracing_no_trace_id_is_shown():
    app = make_app(traced=False)
    message_id = await travel(app, ["A", "B+C"])
    fate = await look_up(app, message_id)
    assert "trace_id" not in fate
    assert all("trace_id" not in copy for copy in fate["copies"])


async def test_an_unknown_message_is_still_a_404_without_a_trace(traced):
    answer = await MessageView(traced, traced.web).get(LOCAL, "no-such-id")
    assert answer.status == 404
    assert "trace_id" not in json.loads(answer.body)


def test_the_latest_hop_naming_a_trace_gives_it_a_hop_by_an_old_stop_in_between_has_none():
    trace = "0af7651916cd43dd8448eb211c80319c"
    hops = [
        {"stop": "busdriver", "trace_id": trace, "span_id": "00f067aa0ba902b7"},
        {"stop": "Legacy"},  # a 0.0.x stop: keeps header.trace, adds no ids to its hop
        {"stop": "Log", "fate": "delivered"},  # the end of the message, as the fates store adds it
    ]
    assert trace_id(hops) == trace
    assert trace_id([{"stop": "A"}]) is None
    assert trace_id(None) is None
    assert trace_id(["not a hop", {"trace_id": 7}]) is None


def test_copies_give_the_trace_when_the_message_itself_has_no_hops_here():
    trace = "0af7651916cd43dd8448eb211c80319c"
    fate = {
        "id": "m",
        "status": "copied",
        "hops": [],
        "copies": [{"copy": "1", "hops": [{"stop": "A"}]}, {"copy": "2", "hops": [{"stop": "A", "trace_id": trace}]}],
    }
    shown = with_trace_ids(fate)
    assert shown["trace_id"] == trace
    assert "trace_id" not in shown["copies"][0]
    assert shown["copies"][1]["trace_id"] == trace
    assert "trace_id" not in fate and "trace_id" not in fate["copies"][1]  # the store's own fate is left as it was
