"""The envelope of wire format v1 and its route operations."""

import json

import pytest

from metrobus_app import Envelope, InvalidEnvelope


def test_stamp_turns_travel_order_into_a_stack():
    envelope = Envelope.stamp({"a": 1}, ["AddEmail", "WhiteList", "Log"])
    assert envelope.route == ["Log", "WhiteList", "AddEmail"]
    assert envelope.header["original_route"] == ["Log", "WhiteList", "AddEmail"]
    assert envelope.header["historical_route"] == []
    assert envelope.next_stop == "AddEmail"
    assert len(envelope.id) == 32


@pytest.mark.parametrize("route", [[], "AddEmail", ()])
def test_stamp_refuses_an_empty_or_string_route(route):
    with pytest.raises(ValueError, match="non-empty list"):
        Envelope.stamp({}, route)


def test_pop_next_moves_the_stop_to_the_history():
    envelope = Envelope.stamp({}, ["AddEmail", "WhiteList", "Log"])
    assert envelope.pop_next() == "AddEmail"
    assert envelope.pop_next() == "WhiteList"
    assert envelope.route == ["Log"]
    assert envelope.header["historical_route"] == ["AddEmail", "WhiteList"]
    assert envelope.header["original_route"] == ["Log", "WhiteList", "AddEmail"]


def test_pop_next_on_an_empty_route_says_the_message_arrived():
    envelope = Envelope.stamp({}, ["Log"])
    envelope.pop_next()
    assert envelope.next_stop is None
    with pytest.raises(IndexError, match="arrived"):
        envelope.pop_next()


def test_push_stop_makes_a_detour_the_next_stop():
    envelope = Envelope.stamp({}, ["AddEmail", "Log"])
    envelope.push_stop("Audit")
    assert envelope.next_stop == "Audit"
    assert envelope.route == ["Log", "AddEmail", "Audit"]


def test_the_design_docs_example_round_trips_with_unknown_fields_kept():
    value = {
        "header": {
            "route": ["Log", "WhiteList"],
            "original_route": ["Log", "WhiteList", "AddEmail"],
            "historical_route": ["AddEmail"],
            "tenant": "acme",
            "hops": [{"stop": "AddEmail"}],
        },
        "payload": {"account_number": 1234567, "message_type_code": "ALTABC"},
    }
    envelope = Envelope.from_bytes(json.dumps(value).encode())
    assert envelope.pop_next() == "WhiteList"
    decoded = json.loads(envelope.to_bytes())
    assert decoded["header"]["tenant"] == "acme"
    assert decoded["header"]["hops"] == [{"stop": "AddEmail"}]
    assert decoded["header"]["historical_route"] == ["AddEmail", "WhiteList"]
    assert decoded["payload"] == value["payload"]


def test_a_0_0_x_envelope_without_history_gets_one():
    envelope = Envelope.from_bytes(b'{"header": {"route": ["Log"]}, "payload": {}}')
    envelope.pop_next()
    assert envelope.header["historical_route"] == ["Log"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty value"),
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'{"payload": {}}', "no 'header' object"),
        (b'{"header": [], "payload": {}}', "'header' is not an object"),
        (b'{"header": {"route": []}}', "no 'payload'"),
        (b'{"header": {}, "payload": {}}', "no 'route'"),
        (b'{"header": {"route": "Log"}, "payload": {}}', "header.route is not a list"),
        (b'{"header": {"route": ["Log", 3]}, "payload": {}}', "header.route is not a list"),
        (b'{"header": {"route": [], "historical_route": {}}, "payload": {}}', "header.historical_route"),
        (b'{"header": {"route": ["Log"], "original_route": ["Log", null]}, "payload": {}}', "header.original_route"),
        (b'{"header": {"route": ["Log"], "historical_route": [1]}, "payload": {}}', "header.historical_route"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
)
def test_a_value_that_is_not_an_envelope_says_why(raw, reason):
    with pytest.raises(InvalidEnvelope, match=reason):
        Envelope.from_bytes(raw)
