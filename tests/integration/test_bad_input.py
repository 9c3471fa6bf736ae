"""Bad values on a stop's topic end on the dead-letter topic, and the worker goes on."""

from __future__ import annotations

import json

import pytest

from metrobus_app import Envelope

from .conftest import produce, read_topic

pytestmark = pytest.mark.integration


def arriving_at_log(payload: dict, route: list[str]) -> bytes:
    envelope = Envelope.stamp(payload, route)
    envelope.pop_next()
    return envelope.to_bytes()


def test_bad_values_are_dead_lettered_with_their_reason_and_the_worker_goes_on(broker, workers):
    worker = workers(METROBUS_EXTERNAL_STOPS="Archive").wait_ready()
    bad = [
        (b"k1", b"this is not json"),
        (b"k2", b'{"payload": {"x": 1}}'),
        (b"k3", arriving_at_log({"x": 3}, ["Log", "Nowhere"])),
        (b"k4", b"\xff\xfe\x00"),
    ]
    good = [(b"k5", arriving_at_log({"x": 5}, ["Log"])), (b"k6", arriving_at_log({"x": 6}, ["Log", "Archive"]))]
    produce(broker, "Log", bad + good)

    letters = {key: json.loads(value) for key, value in read_topic(broker, "Error", len(bad))}
    assert set(letters) == {b"k1", b"k2", b"k3", b"k4"}
    assert all(letter["stop"] == "Log" for letter in letters.values())
    assert letters[b"k1"]["error"] == "InvalidEnvelope"
    assert letters[b"k1"]["message"].startswith("value is not JSON")
    assert letters[b"k1"]["value"] == "this is not json"
    assert letters[b"k2"]["message"] == "no 'header' object"
    assert letters[b"k3"]["error"] == "UnknownStop"
    assert "'Nowhere'" in letters[b"k3"]["message"]
    assert letters[b"k4"]["value_base64"] == "//4A"

    archived = read_topic(broker, "Archive", 1)
    assert [(key, json.loads(value)["payload"]) for key, value in archived] == [(b"k6", {"x": 6})]
    stats = worker.wait_for("/metrobus/stats/", lambda s: s["stops"].get("Log", {}).get("received") == 6)
    assert stats["stops"]["Log"]["delivered"] == 1
    assert stats["stops"]["Log"]["dead_lettered_by_error"] == {"InvalidEnvelope": 3, "UnknownStop": 1}
    assert worker.process.poll() is None


def test_a_bad_raw_record_on_source_is_dead_lettered(broker, workers):
    workers().wait_ready()
    produce(broker, "Source", [(b"a", b"[1, 2, 3]"), (b"b", b"{broken")])
    letters = [json.loads(value) for _, value in read_topic(broker, "Error", 2)]
    assert sorted(letter["message"].split(":")[0] for letter in letters) == [
        "value is a JSON list, not an object",
        "value is not JSON",
    ]
    assert {letter["stop"] for letter in letters} == {"busdriver"}
