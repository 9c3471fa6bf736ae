"""The undo stack on the envelope: order, logs as JSON, fan-out copies, the story of a failure."""

from __future__ import annotations

import json

from metrobus_app import Envelope
from metrobus_app.core.route import fan_out
from metrobus_app.wire import compensation
from metrobus_app.wire.envelope import COMPENSATE, COMPENSATING
from metrobus_app.wire.steps import stamp


def journey() -> Envelope:
    """A message that went through Reserve and Charge (both undoable) and failed at Ship."""
    envelope = Envelope.stamp({"order": 7}, ["Reserve", "Charge", "Ship", "Notify"])
    for stop, log in (("Reserve", {"hold": "h-1"}), ("Charge", {"payment": "p-9", "cents": 1250})):
        envelope.pop_next()
        compensation.push_undo(envelope, stop, log)
    envelope.pop_next()  # Ship received it
    return envelope


def test_the_stack_keeps_the_stops_done_in_order_with_their_logs_as_json():
    envelope = Envelope.from_bytes(journey().to_bytes())
    assert envelope.header[COMPENSATE] == [
        {"stop": "Reserve", "log": {"hold": "h-1"}},
        {"stop": "Charge", "log": {"payment": "p-9", "cents": 1250}},
    ]
    assert compensation.undo_stops(envelope) == ["Charge", "Reserve"]  # newest first


def test_begin_routes_the_message_through_the_compensations_newest_first():
    envelope = journey()
    assert compensation.begin(envelope, "Ship", TimeoutError("carrier down"), fate="compensated")
    assert envelope.next_stop == "Charge"
    assert envelope.route == ["Reserve", "Charge"]
    told = envelope.header[COMPENSATING]
    assert (told["stop"], told["error"], told["message"], told["route"]) == (
        "Ship",
        "TimeoutError",
        "carrier down",
        ["Notify"],
    )


def test_nothing_to_undo_leaves_the_message_as_it_was():
    envelope = Envelope.stamp({}, ["Ship"])
    envelope.pop_next()
    before = envelope.to_bytes()
    assert not compensation.begin(envelope, "Ship", ValueError("x"), fate="compensated")
    assert envelope.to_bytes() == before


def test_the_story_rebuilds_the_message_as_it_failed_with_what_was_undone():
    envelope = journey()
    compensation.begin(envelope, "Ship", ValueError("bad address"), fate="compensated")
    for stop in ("Charge", "Reserve"):
        envelope.pop_next()
        assert compensation.entry_of(envelope, stop) is not None
        compensation.undone(envelope, stop)
    failed_at, told, original = compensation.story(envelope)
    assert failed_at == "Ship"
    assert told["undone"] == ["Charge", "Reserve"]
    assert original.route == ["Notify"]
    assert original.header[COMPENSATE] == journey().header[COMPENSATE]  # kept, for a replay
    assert COMPENSATING not in original.header
    assert json.loads(original.to_bytes())["payload"] == {"order": 7}


def test_fan_out_copies_carry_their_own_stacks():
    fanned = stamp({"n": 1}, ["Reserve", "Log+Archive"])
    fanned.pop_next()
    compensation.push_undo(fanned, "Reserve", "r-1")
    log, archive = (Envelope.from_bytes(copy.to_bytes()) for copy in fan_out(fanned))
    assert compensation.begin(log, "Log", ValueError("disk full"), fate="compensated")
    assert log.next_stop == "Reserve"
    assert COMPENSATING not in archive.header  # the other copy goes on as it was
    assert archive.header[COMPENSATE] == [{"stop": "Reserve", "log": "r-1"}]


def test_a_wait_goes_to_the_shortest_tier_at_least_as_long_else_the_longest():
    tiers = (5, 30, 300)
    assert [compensation.tier_for(wait, tiers) for wait in (1.2, 5, 5.01, 29, 31, 9999)] == [5, 5, 30, 30, 300, 300]
