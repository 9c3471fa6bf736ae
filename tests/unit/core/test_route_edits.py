"""Route edits by stops (detour, skip, replace), fan-out copies, and 0.0.x stops around a fan-out."""

from __future__ import annotations

import json

import pytest

from metrobus_app import Envelope, Settings, UnknownStop, create_app
from metrobus_app.core.route import Route, fan_out, late_copies
from metrobus_app.wire.outcome import DEAD_LETTERED, FORWARDED, Outcome
from metrobus_app.wire.steps import stamp

KNOWN = {"A", "B", "C", "Log", "Archive", "Review"}


def arrived(steps: list, payload: object = None) -> Envelope:
    """An envelope as its first stop gets it: stamped with ``steps`` and the first one popped."""
    envelope = stamp({"n": 1} if payload is None else payload, steps)
    envelope.pop_next()
    return envelope


def route_of(envelope: Envelope, stop: str = "A") -> Route:
    return Route(envelope, stop, lambda: KNOWN)


def legacy_forward(envelope: Envelope) -> Envelope:
    """What a 0.0.x stop does: pop route[-1], append it to historical_route, send the JSON on."""
    message = json.loads(envelope.to_bytes())
    message["header"]["historical_route"].append(message["header"]["route"].pop())
    return Envelope.from_value(message)


# --- stamping and the wire format ----------------------------------------------------------------


def test_a_plain_route_is_stamped_exactly_as_before():
    envelope = stamp({"n": 1}, ["A", "B"])
    assert set(envelope.header) == set(Envelope.stamp({}, ["A", "B"]).header)
    assert envelope.route == ["B", "A"]


def test_a_fan_out_step_puts_its_first_stop_in_the_route_and_the_rest_in_fanout():
    envelope = stamp({"n": 1}, ["A", "Log+Archive", "C"])
    assert envelope.route == ["C", "Log", "A"]  # plain names only: a 0.0.x stop can pop any of them
    assert envelope.header["fanout"] == {"1": ["Log", "Archive"]}
    assert envelope.header["original_fanout"] == {"1": ["Log", "Archive"]}
    assert envelope.header["original_route"] == ["C", "Log", "A"]
    assert stamp({}, ["A", ("Log", "Archive")]).header["fanout"] == {"0": ["Log", "Archive"]}


def test_a_route_that_can_change_is_read_again_each_time_one_that_cannot_is_the_same_each_time():
    fan = ["Log", "Archive"]
    steps = ("A", fan)  # a tuple, but with a list inside that may change between records
    assert stamp({}, steps).header["fanout"] == {"0": ["Log", "Archive"]}
    fan.append("Review")
    assert stamp({}, steps).header["fanout"] == {"0": ["Log", "Archive", "Review"]}
    fixed = ("A", ("Log", "Archive"), "C")
    first, again = stamp({}, fixed), stamp({}, fixed)
    assert first.route == again.route == ["C", "Log", "A"]
    assert first.header["fanout"] == again.header["fanout"] == {"1": ["Log", "Archive"]}
    first.header["fanout"]["1"].append("Review")  # each envelope has its own copy of the plan
    assert stamp({}, fixed).header["fanout"] == {"1": ["Log", "Archive"]}


@pytest.mark.parametrize("steps", [[], "A", ["A", "Log+"], ["A", ["Log", "Log"]], ["A", 3]])
def test_stamp_refuses_what_is_not_a_route(steps):
    with pytest.raises(ValueError):
        stamp({}, steps)


# --- route edits -------------------------------------------------------------------------------


def test_a_detour_comes_next_and_the_rest_follows():
    envelope = arrived(["A", "B", "C"])
    route = route_of(envelope)
    assert route.ahead == ["B", "C"] and route.next == "B"
    route.detour("Review")
    assert route.ahead == ["Review", "B", "C"]
    route.detour("Log", "Archive+C")
    assert route.ahead == ["Log", ("Archive", "C"), "Review", "B", "C"]
    assert envelope.route == ["C", "B", "Review", "Archive", "Log"]  # still a stack of plain names
    assert envelope.header["fanout"] == {"3": ["Archive", "C"]}
    edits = envelope.header["route_edits"]
    assert [(e["stop"], e["edit"], e["steps"]) for e in edits] == [
        ("A", "detour", ["Review"]),
        ("A", "detour", ["Log", "Archive+C"]),
    ]
    assert all(e["at"] > 0 for e in edits)


def test_skip_leaves_out_the_next_steps_fan_out_included():
    envelope = arrived(["A", "Log+Archive", "B", "C"])
    route = route_of(envelope)
    route.skip()
    assert route.ahead == ["B", "C"]
    assert "fanout" not in envelope.header
    route.skip(2)
    assert route.ahead == [] and route.next is None
    assert [e["steps"] for e in envelope.header["route_edits"]] == [["Log+Archive"], ["B", "C"]]
    with pytest.raises(ValueError, match="cannot skip 1 steps: 0 ahead"):
        route.skip()


def test_replace_swaps_everything_ahead_and_says_what_was_there():
    envelope = arrived(["A", "B", "Log+Archive"])
    route = route_of(envelope)
    route.replace("Review", "C")
    assert route.ahead == ["Review", "C"]
    assert "fanout" not in envelope.header
    assert envelope.header["route_edits"][-1] == {
        "stop": "A",
        "edit": "replace",
        "steps": ["Review", "C"],
        "was": ["B", "Log+Archive"],
        "at": envelope.header["route_edits"][-1]["at"],
    }
    route.replace()
    assert envelope.route == []  # the journey ends at this stop


def test_an_edit_to_an_unknown_stop_is_refused_at_once():
    envelope = arrived(["A", "B"])
    with pytest.raises(UnknownStop, match=r"A routes to unknown stop 'Nope' \(known: A, Archive"):
        route_of(envelope).detour("Review+Nope")
    assert envelope.route == ["B"] and "route_edits" not in envelope.header


# --- fan-out copies ----------------------------------------------------------------------------


def test_fan_out_makes_one_copy_per_stop_each_with_its_own_copy_id_and_route():
    envelope = arrived(["A", "Log+Archive", "C"])
    assert fan_out(arrived(["A", "B"]))[0].route == ["B"]  # not a fan-out: the envelope itself
    first, second = fan_out(envelope)
    assert (first.route, second.route) == (["C", "Log"], ["C", "Archive"])
    assert (first.header["copy"], second.header["copy"]) == ("1", "2")
    assert "fanout" not in first.header and "fanout" not in second.header
    assert envelope.route == ["C", "Log"] and "copy" not in envelope.header  # the original is unchanged
    first.pop_next()
    assert second.header["historical_route"] == ["A"]  # copies share no lists


def test_a_copy_fanned_out_again_gets_nested_copy_ids():
    envelope = arrived(["A", "Log+Archive", "B+C"])
    _, archive = fan_out(envelope)
    archive.pop_next()
    assert [c.header["copy"] for c in fan_out(archive)] == ["2.1", "2.2"]


def test_a_0_0_x_stop_before_a_fan_out_sends_to_the_first_stop_which_sends_the_other_copies():
    at_legacy = arrived(["Legacy", "Log+Archive", "C"])
    at_log = legacy_forward(at_legacy)
    assert at_log.header["historical_route"] == ["Legacy", "Log"]
    [archive] = late_copies(at_log, "Log")
    assert archive.header["historical_route"] == ["Legacy", "Archive"]
    assert (archive.route, archive.header["copy"]) == (["C"], "2")
    assert (at_log.route, at_log.header["copy"]) == (["C"], "1")
    assert "fanout" not in at_log.header and "fanout" not in archive.header
    assert late_copies(at_log, "Log") == []  # done once


def test_a_fan_out_passed_by_two_0_0_x_stops_is_dropped_with_a_warning(caplog):
    envelope = legacy_forward(legacy_forward(arrived(["Legacy", "Log+Archive", "Other", "C"])))
    assert late_copies(envelope, "Other") == []
    assert "fan-out step Log+Archive was passed without copies" in caplog.text
    assert "fanout" not in envelope.header


# --- through a bus -----------------------------------------------------------------------------


@pytest.fixture()
def bus():
    app = create_app(Settings(app_id="unit-edits", store="memory://", external_stops=("Legacy",)))
    bus = app.bus
    sent: list[tuple[str, dict]] = []

    async def record(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append((topic, json.loads(value)))

    bus.sender = record

    @bus.stop("Fraud", route=True)
    def fraud(payload: dict, route: Route) -> dict:
        if payload["amount"] > 100:
            route.detour("Review")
        if payload.get("fast"):
            route.skip()
        if payload.get("stop_here"):
            route.replace()
        if payload.get("nowhere"):
            route.detour("Nowhere")
        return payload

    for name in ("Review", "Log", "Archive", "B"):
        bus.stop(name)(lambda payload: payload)

    @bus.busdriver()
    def driver(record: dict) -> list:
        return record["route"]

    app.finalize()
    app.flow_control.resume()
    bus.sent = sent
    return bus


async def put(bus, stop: str, value: bytes) -> Outcome:
    async with bus.agents[stop].test_context() as agent:
        event = await agent.put(value, key=b"k")
        return agent.results[event.message.offset]


async def test_a_stop_with_route_true_detours_and_the_history_shows_it(bus):
    outcome = await put(bus, "Fraud", arrived(["Fraud", "B", "Log"], {"amount": 500}).to_bytes())
    assert outcome == Outcome("Fraud", FORWARDED, "Review")
    [(topic, value)] = bus.sent
    assert topic == "Review"
    assert value["header"]["route"] == ["Log", "B"]  # a plain stack still
    assert value["header"]["historical_route"] == ["Fraud", "Review"]
    assert value["header"]["route_edits"][0]["edit"] == "detour"
    bus.sent.clear()
    await put(bus, "Review", json.dumps(value).encode())
    assert bus.sent[0][1]["header"]["historical_route"] == ["Fraud", "Review", "B"]


@pytest.mark.parametrize(
    ("payload", "fate", "detail"),
    [
        ({"amount": 1}, FORWARDED, "B"),
        ({"amount": 1, "fast": True}, FORWARDED, "Log"),
        ({"amount": 1, "stop_here": True}, "delivered", ""),
        ({"amount": 1, "nowhere": True}, DEAD_LETTERED, "UnknownStop"),
    ],
)
async def test_skip_replace_and_an_unknown_detour_through_the_agent(bus, payload, fate, detail):
    outcome = await put(bus, "Fraud", arrived(["Fraud", "B", "Log"], payload).to_bytes())
    assert (outcome.fate, outcome.detail) == (fate, detail)
    if fate == DEAD_LETTERED:
        assert "Fraud routes to unknown stop 'Nowhere'" in bus.sent[0][1]["message"]


async def test_the_busdriver_fans_out_copies_and_observers_see_how_many(bus):
    seen: list[Outcome] = []
    bus.observers.append(seen.append)
    outcome = await put(bus, "busdriver", json.dumps({"route": ["Log+Archive", "B"]}).encode())
    assert outcome == Outcome("busdriver", FORWARDED, "Log+Archive")
    assert seen[-1].copies == 2
    assert [topic for topic, _ in bus.sent] == ["Log", "Archive"]
    for (topic, value), copy in zip(bus.sent, ("1", "2"), strict=True):
        assert value["header"]["copy"] == copy
        assert value["header"]["route"] == ["B"]
        assert value["header"]["historical_route"] == [topic]
        assert value["header"]["hops"][-1]["stop"] == "busdriver"
    assert bus.sent[0][1]["header"]["id"] == bus.sent[1][1]["header"]["id"]
    assert bus.stats["busdriver"].as_dict()["forwarded_to"] == {"Log+Archive": 1}


async def test_a_fan_out_to_an_unknown_stop_sends_no_copy(bus):
    outcome = await put(bus, "busdriver", json.dumps({"route": ["Log+Nowhere"]}).encode())
    assert (outcome.fate, outcome.detail) == (DEAD_LETTERED, "UnknownStop")
    assert [topic for topic, _ in bus.sent] == ["Error"]
    assert "fan-out names unknown stop 'Nowhere'" in bus.sent[0][1]["message"]


async def test_a_stop_after_a_0_0_x_stop_sends_the_fan_out_copies_it_missed(bus):
    at_log = legacy_forward(arrived(["Legacy", "Log+Archive", "B"]))
    outcome = await put(bus, "Log", at_log.to_bytes())
    assert (outcome.fate, outcome.detail) == (FORWARDED, "B")
    (late_topic, late), (topic, own) = bus.sent
    assert (late_topic, late["header"]["copy"], late["header"]["historical_route"]) == (
        "Archive",
        "2",
        ["Legacy", "Archive"],
    )
    assert (topic, own["header"]["copy"], own["header"]["historical_route"]) == ("B", "1", ["Legacy", "Log", "B"])
