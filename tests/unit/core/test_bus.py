"""Stops, the busdriver and forward(), through Faust's agent test context."""

from __future__ import annotations

import json

import pytest

from metrobus_app import Drop, Envelope, Settings, create_app
from metrobus_app.wire.outcome import DEAD_LETTERED, DELIVERED, DROPPED, FORWARDED, Outcome


def envelope_bytes(route: list[str], payload: object = None, **header: object) -> bytes:
    """An envelope as it arrives at the first stop of ``route`` (that stop already popped)."""
    envelope = Envelope.stamp({"n": 1} if payload is None else payload, route, **header)
    envelope.pop_next()
    return envelope.to_bytes()


@pytest.fixture()
def small_bus():
    """A bus of its own: stops First -> Second, an external stop Legacy, recorded sends."""
    app = create_app(Settings(app_id="unit-bus", store="memory://", external_stops=("Legacy",), max_message_bytes=2000))
    bus = app.bus
    sent: list[tuple[str, bytes | None, dict]] = []

    async def record(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append((topic, key, json.loads(value)))

    bus.sender = record

    @bus.stop("First")
    def first(payload: dict) -> dict | None:
        if payload.get("fail"):
            raise KeyError("boom")
        if payload.get("drop"):
            raise Drop("told to drop")
        if payload.get("none"):
            return None
        return {**payload, "first": True}

    @bus.stop("Second")
    async def second(payload: dict) -> dict:
        return {**payload, "second": True}

    @bus.busdriver()
    def route(record: dict) -> list[str] | Envelope | None:
        if record.get("kind") == "skip":
            return None
        if record.get("kind") == "ready":
            return Envelope.stamp(record, ["Second"], priority="high")
        if record.get("kind") == "crash":
            raise RuntimeError("driver crashed")
        return ["First", "Second"]

    app.finalize()
    app.flow_control.resume()
    bus.sent = sent
    return bus


async def put(bus, stop: str, value: bytes | None, key: bytes | None = b"k1") -> Outcome:
    async with bus.agents[stop].test_context() as agent:
        event = await agent.put(value, key=key)
        return agent.results[event.message.offset]


async def test_a_returned_payload_goes_to_the_next_stop_with_its_key(small_bus):
    outcome = await put(small_bus, "First", envelope_bytes(["First", "Second"], tenant="acme"), key=b"acct-7")
    assert outcome == Outcome("First", FORWARDED, "Second")
    [(topic, key, value)] = small_bus.sent
    assert (topic, key) == ("Second", b"acct-7")
    assert value["payload"] == {"n": 1, "first": True}
    assert value["header"]["route"] == []
    assert value["header"]["historical_route"] == ["First", "Second"]
    assert value["header"]["tenant"] == "acme"
    assert small_bus.stats["First"].forwarded["Second"] == 1


async def test_a_forward_takes_the_senders_offer_when_it_fits_and_the_awaited_send_when_not(small_bus):
    offered: list[tuple[str, bytes | None]] = []
    fits = True

    def offer(topic: str, key: bytes | None, value: bytes) -> bool:
        if fits:
            offered.append((topic, key))
        return fits

    small_bus.offer = offer
    await put(small_bus, "First", envelope_bytes(["First", "Second"]), key=b"a")
    fits = False
    await put(small_bus, "First", envelope_bytes(["First", "Second"]), key=b"b")
    assert offered == [("Second", b"a")]
    assert [(topic, key) for topic, key, _ in small_bus.sent] == [("Second", b"b")]
    small_bus.sender = small_bus.sender  # a sender set anew: the offer was the old sender's
    assert small_bus.offer is None


async def test_an_async_stop_at_the_end_of_its_route_delivers(small_bus):
    outcome = await put(small_bus, "Second", envelope_bytes(["Second"]))
    assert outcome == Outcome("Second", DELIVERED)
    assert small_bus.sent == []
    assert small_bus.stats["Second"].delivered == 1


@pytest.mark.parametrize(
    ("payload", "reason"), [({"none": True}, "First returned None"), ({"drop": True}, "told to drop")]
)
async def test_none_or_drop_drops_and_counts_the_reason(small_bus, payload, reason):
    outcome = await put(small_bus, "First", envelope_bytes(["First", "Second"], payload))
    assert outcome == Outcome("First", DROPPED, reason)
    assert small_bus.sent == []
    assert small_bus.stats["First"].dropped == {reason: 1}


async def test_an_exception_dead_letters_the_original_value_and_the_agent_goes_on(small_bus):
    bad = envelope_bytes(["First", "Second"], {"fail": True})
    assert await put(small_bus, "First", bad) == Outcome("First", DEAD_LETTERED, "KeyError")
    [(topic, key, letter)] = small_bus.sent
    assert (topic, key) == ("Error", b"k1")
    assert letter["stop"] == "First"
    assert letter["error"] == "KeyError"
    assert letter["message"] == "'boom'"
    assert letter["value"] == bad.decode()
    assert letter["time"] > 0
    assert (await put(small_bus, "First", envelope_bytes(["First", "Second"]))).fate == FORWARDED


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"not json at all", "not JSON"),
        (b'{"x": 1}', "no 'header'"),
        (b"\xff\x00", "not UTF-8"),
        (None, "empty value"),
        (b'{"header": {"route": []}, "payload": "' + b"a" * 3000 + b'"}', "above METROBUS_MAX_MESSAGE_BYTES=2000"),
    ],
)
async def test_a_value_that_is_not_an_envelope_is_dead_lettered_with_why(small_bus, value, says):
    assert await put(small_bus, "First", value) == Outcome("First", DEAD_LETTERED, "InvalidEnvelope")
    [(topic, _, letter)] = small_bus.sent
    assert topic == "Error"
    assert says in letter["message"]
    assert ("value" in letter) or ("value_base64" in letter)


async def test_non_utf8_bytes_are_kept_in_base64(small_bus):
    await put(small_bus, "First", b"\xff\x00")
    assert small_bus.sent[0][2]["value_base64"] == "/wA="


async def test_a_route_to_an_unknown_stop_is_dead_lettered(small_bus):
    outcome = await put(small_bus, "First", envelope_bytes(["First", "Nowhere"]))
    assert outcome == Outcome("First", DEAD_LETTERED, "UnknownStop")
    [(topic, _, letter)] = small_bus.sent
    assert topic == "Error"
    assert "'Nowhere'" in letter["message"]
    assert json.loads(letter["value"])["payload"]["first"] is True


async def test_a_route_to_an_external_stop_is_sent_there(small_bus):
    assert await put(small_bus, "First", envelope_bytes(["First", "Legacy"])) == Outcome("First", FORWARDED, "Legacy")
    assert small_bus.sent[0][0] == "Legacy"


async def test_the_busdriver_stamps_the_route_and_sends_to_the_first_stop(small_bus):
    record = {"account_number": 1000001, "message_type_code": "ALTABC"}
    outcome = await put(small_bus, "busdriver", json.dumps(record).encode(), key=b"1000001")
    assert outcome == Outcome("busdriver", FORWARDED, "First")
    [(topic, key, value)] = small_bus.sent
    assert (topic, key) == ("First", b"1000001")
    assert value["payload"] == record
    assert value["header"]["route"] == ["Second"]
    assert value["header"]["original_route"] == ["Second", "First"]
    assert value["header"]["historical_route"] == ["First"]


async def test_the_busdriver_may_return_an_envelope_or_drop(small_bus):
    assert (await put(small_bus, "busdriver", b'{"kind": "ready"}')).detail == "Second"
    assert small_bus.sent[0][2]["header"]["priority"] == "high"
    assert await put(small_bus, "busdriver", b'{"kind": "skip"}') == Outcome(
        "busdriver", DROPPED, "busdriver gave no route"
    )


@pytest.mark.parametrize(
    ("value", "error"), [(b"[1]", "InvalidEnvelope"), (b"{", "InvalidEnvelope"), (b'{"kind": "crash"}', "RuntimeError")]
)
async def test_the_busdriver_dead_letters_bad_records(small_bus, value, error):
    assert await put(small_bus, "busdriver", value) == Outcome("busdriver", DEAD_LETTERED, error)
    assert small_bus.sent[0][0] == "Error"


def test_a_stop_declared_twice_is_refused(small_bus):
    with pytest.raises(ValueError, match="declared twice"):
        small_bus.stop("First")(lambda payload: payload)


def test_a_worker_told_to_run_some_stops_runs_only_those():
    app = create_app(Settings(app_id="unit-some", store="memory://", stops=("Second",)))

    @app.bus.stop("First")
    def first(payload):
        return payload

    @app.bus.stop("Second")
    def second(payload):
        return payload

    assert set(app.bus.agents) == {"Second"}
    assert app.bus.known_stops == {"First", "Second"}


async def test_each_forward_records_a_hop_with_times_and_worker(small_bus):
    await put(small_bus, "busdriver", b'{"kind": "plain"}')
    first = small_bus.sent[-1][2]
    await put(small_bus, "First", json.dumps(first).encode())
    hops = small_bus.sent[-1][2]["header"]["hops"]
    assert [hop["stop"] for hop in hops] == ["busdriver", "First"]
    for hop in hops:
        assert hop["received"] <= hop["forwarded"]
        assert hop["worker"] == small_bus.worker_id
    assert hops[0]["forwarded"] <= hops[1]["received"]


async def test_observers_see_every_outcome_with_its_envelope_and_time(small_bus):
    seen: list[Outcome] = []
    small_bus.observers.append(seen.append)
    await put(small_bus, "First", envelope_bytes(["First", "Second"], {"drop": True}))
    await put(small_bus, "First", b"garbage")
    assert [(o.fate, o.detail) for o in seen] == [(DROPPED, "told to drop"), (DEAD_LETTERED, "InvalidEnvelope")]
    assert seen[0].envelope is not None and seen[0].envelope.payload == {"drop": True}
    assert seen[1].envelope is None
    assert all(o.elapsed > 0 and o.received_at > 0 for o in seen)
    assert small_bus.stats["First"].received == 2
