"""The examples of "Tracing" (docs/tracing.md): the in-memory spans of a two-stop route, driven through
Faust's agent test context on a fresh app's bus, and the collector's shell example against the real settings."""

from __future__ import annotations

import itertools
import json
import os
import subprocess

import pytest
from opentelemetry.trace import SpanKind

import metrobus_app
from metrobus_app import Settings, create_app
from tests.docs.test_examples import DOCS, EXAMPLES, ROOT, commands_of, exports, load_example


@pytest.fixture()
def traced(monkeypatch):
    """The in-memory example loaded on a fresh app's bus (standing in for the default one), its sends recorded."""
    app = create_app(Settings(app_id="docs-trace", store="memory://"))
    bus = app.bus
    sent: list[tuple[str, bytes, list]] = []

    async def record(topic: str, key: bytes | None, value: bytes, headers: list | None = None) -> None:
        sent.append((topic, value, headers or []))

    bus.sender = record
    monkeypatch.setattr(metrobus_app, "bus", bus, raising=False)
    monkeypatch.setattr(metrobus_app, "stop", bus.stop, raising=False)
    monkeypatch.setattr(metrobus_app, "busdriver", bus.busdriver, raising=False)
    example = load_example("tracing_inmemory.py")
    app.finalize()
    app.flow_control.resume()
    return bus, example, sent


async def put(bus, stop: str, value: bytes, headers: dict | None = None):
    async with bus.agents[stop].test_context() as agent:
        event = await agent.put(value, key=b"k", headers=headers)
        return agent.results[event.message.offset]


async def travel(bus, sent: list) -> list:
    """One record through the busdriver and every stop it is sent to, with the Kafka headers the bus set."""
    outcomes = [await put(bus, "busdriver", json.dumps({"order": 1}).encode())]
    handed = 0
    while handed < len(sent):
        topic, value, headers = sent[handed]
        handed += 1
        if topic in bus.agents and topic != "busdriver":
            outcomes.append(await put(bus, topic, value, dict(headers)))
    return outcomes


async def test_the_two_stop_route_is_one_trace_of_three_spans_as_the_page_shows(traced):
    bus, example, sent = traced
    assert bus.tracing is not None
    outcomes = await travel(bus, sent)
    assert [outcome.fate for outcome in outcomes] == ["forwarded", "forwarded", "delivered"]
    spans = sorted(example.exporter.get_finished_spans(), key=lambda span: span.start_time)
    assert [span.name for span in spans] == ["metrobus.stop busdriver", "metrobus.stop Validate", "metrobus.stop Store"]
    assert {span.kind for span in spans} == {SpanKind.CONSUMER}
    assert len({span.context.trace_id for span in spans}) == 1
    assert spans[0].parent is None
    for parent, child in itertools.pairwise(spans):
        assert child.parent.span_id == parent.context.span_id
    assert example.show(spans) == (EXAMPLES / "tracing_inmemory_output.txt").read_text().rstrip("\n")


async def test_the_attributes_the_page_lists_are_on_the_spans(traced):
    bus, example, sent = traced
    await travel(bus, sent)
    page = (DOCS / "tracing.md").read_text()
    for span in example.exporter.get_finished_spans():
        for name in span.attributes:
            assert f"`{name}`" in page, name
    validate = next(span for span in example.exporter.get_finished_spans() if span.name == "metrobus.stop Validate")
    assert validate.attributes["messaging.system"] == "kafka"
    assert validate.attributes["messaging.destination.name"] == "Validate"
    assert validate.attributes["messaging.consumer.group.name"] == "docs-trace"
    assert validate.attributes["metrobus.next_stop"] == "Store"


async def test_the_trace_id_is_in_the_hops_the_envelope_and_the_kafka_headers(traced):
    bus, example, sent = traced
    await travel(bus, sent)
    trace_id = f"{example.exporter.get_finished_spans()[0].context.trace_id:032x}"
    [(_, value, headers)] = [one for one in sent if one[0] == "Store"]
    header = json.loads(value)["header"]
    assert [hop["trace_id"] for hop in header["hops"]] == [trace_id, trace_id]  # busdriver, Validate
    assert header["trace"]["traceparent"].split("-")[1] == trace_id
    assert dict(headers)["traceparent"] == header["trace"]["traceparent"].encode()


# --- the collector's shell example -------------------------------------------------------------------


def test_the_collector_example_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(EXAMPLES / "tracing_collector.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_collector_example_turns_tracing_on_with_settings_that_exist():
    environ = exports("tracing_collector.sh")
    settings = Settings.from_env(environ)
    assert settings.tracing == "on"
    assert settings.trace_sample_ratio == 1.0
    assert environ["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")  # OTLP/HTTP, as the exporter of the extra speaks
    assert environ["OTEL_TRACES_EXPORTER"] == "otlp"
    text = (EXAMPLES / "tracing_collector.sh").read_text()
    assert "-p 4318:4318" in text
    page = (DOCS / "tracing.md").read_text()
    for variable in environ:
        assert f"`{variable}`" in page, variable


def test_the_collector_examples_worker_options_are_options_of_the_real_worker_command():
    [words] = commands_of("tracing_collector.sh")
    assert words[0] == "worker"
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "faust"), "-A", "metrobus_app", "worker", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for option in (word.split("=")[0] for word in words if word.startswith("-")):
        assert f" {option}" in result.stdout or f",{option}" in result.stdout, option


def test_the_settings_command_shows_the_tracing_settings():
    environ = {name: value for name, value in os.environ.items() if not name.startswith("METROBUS_TRAC")}
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "faust"), "-A", "metrobus_app", "settings"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=environ,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "METROBUS_TRACING=off" in result.stdout
    assert "METROBUS_TRACE_SAMPLE_RATIO=1.0" in result.stdout
