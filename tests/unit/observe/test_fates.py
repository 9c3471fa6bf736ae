"""The record of fates behind /metrobus/messages/{id}: what it keeps, for how long, and how many."""

from __future__ import annotations

import json
import time

import pytest

from metrobus_app import Drop, Envelope, Settings, create_app
from metrobus_app.observe.fates import FateStore, decode_fate, fate_lines, where
from metrobus_app.wire.outcome import Outcome

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def moved(envelope: Envelope, stop: str, to: str, at: float) -> Outcome:
    envelope.pop_next()
    envelope.add_hop(stop, at - 0.001, at, "w1")
    return Outcome(stop, "forwarded", to, envelope=envelope, received_at=at - 0.001, elapsed=0.001)


def ended(envelope: Envelope, stop: str, fate: str, detail: str = "", at: float = T0, message: str = "") -> Outcome:
    return Outcome(stop, fate, detail, envelope=envelope, received_at=at - 0.002, elapsed=0.002, message=message)


def test_a_message_is_in_transit_then_ends_with_its_hops():
    store = FateStore(10, 60, "w1", Clock())
    envelope = Envelope.stamp({"x": 1}, ["A", "B"])
    store.record(moved(envelope, "busdriver", "A", T0 - 2))
    fate = store.get(envelope.id)
    assert fate["status"] == "in_transit"
    assert fate["stop"] == "A"
    assert where(fate) == "in transit: sent on to A by busdriver; waiting at or being handled by A"
    store.record(moved(envelope, "A", "B", T0 - 1))
    assert store.get(envelope.id)["stop"] == "B"
    store.record(ended(envelope, "B", "dropped", "not today"))
    fate = store.get(envelope.id)
    assert fate["status"] == "dropped"
    assert fate["detail"] == "not today"
    assert where(fate) == "dropped at B: not today"
    assert [hop["stop"] for hop in fate["hops"]] == ["busdriver", "A", "B"]
    assert fate["hops"][-1] == {"stop": "B", "received": T0 - 0.002, "ended": T0, "worker": "w1", "fate": "dropped"}
    assert fate["time"] == T0


def test_a_terminal_fate_is_not_replaced_by_a_late_in_transit_one():
    store = FateStore(10, 60, "w1", Clock())
    envelope = Envelope.stamp({"x": 1}, ["A", "B"])
    store.record(ended(envelope, "B", "delivered"))
    store.record(moved(Envelope.from_bytes(envelope.to_bytes()), "A", "B", T0 + 1))  # read again after a rebalance
    assert store.get(envelope.id)["status"] == "delivered"


def test_the_store_keeps_at_most_max_count_messages_the_oldest_go_first():
    store = FateStore(100, 3600, "w1", Clock())
    ids = []
    for i in range(250):
        envelope = Envelope.stamp({"i": i}, ["A"])
        ids.append(envelope.id)
        store.record(ended(envelope, "A", "delivered", at=T0 + i))
    assert len(store) == 100
    assert store.evicted == 150
    assert store.get(ids[149]) is None
    assert store.get(ids[150])["status"] == "delivered"
    # a message seen again moves to the young end
    store.record(ended(Envelope.from_bytes(Envelope.stamp({}, ["A"], id=ids[150]).to_bytes()), "A", "dropped", "x"))
    store.record(ended(Envelope.stamp({}, ["A"]), "A", "delivered"))
    assert store.get(ids[150])["status"] == "dropped"
    assert store.get(ids[151]) is None


def test_the_store_forgets_what_is_older_than_its_ttl():
    clock = Clock()
    store = FateStore(1000, 60, "w1", clock)
    old, young = Envelope.stamp({}, ["A"]), Envelope.stamp({}, ["A"])
    store.record(ended(old, "A", "delivered", at=T0))
    store.record(ended(young, "A", "delivered", at=T0 + 30))
    clock.now = T0 + 61
    assert store.get(old.id) is None  # expired at lookup, before the sweep
    assert store.expire() == 1
    assert len(store) == 1
    assert store.get(young.id)["status"] == "delivered"
    clock.now = T0 + 91
    assert store.expire() == 1
    assert len(store) == 0


def test_published_fates_round_trip_through_the_topic_format():
    clock = Clock()
    here, there = FateStore(10, 60, "w1", clock), FateStore(10, 60, "w2", clock)
    envelope = Envelope.stamp({"x": "<script>alert(1)</script>"}, ["A"])
    here.record(ended(envelope, "A", "dead_lettered", "KeyError", message="'account_number'"))
    transit = Envelope.stamp({}, ["A", "B"])
    here.record(moved(transit, "busdriver", "A", T0))  # in transit: not published
    record = here.drain()
    assert here.drain() is None
    assert [(key, decode_fate(key, fate)["status"]) for key, fate in fate_lines(b"w1-1", record)] == [
        (envelope.id, "dead_lettered")
    ]
    there.load(b"w1-1", record, T0)
    assert there.get(envelope.id) == here.get(envelope.id)
    assert where(there.get(envelope.id)) == "dead-lettered at A: KeyError: 'account_number'"
    # too old for the TTL, or a tombstone: not kept
    old = Envelope.stamp({}, ["A"])
    here.record(ended(old, "A", "delivered"))
    there.load(b"w1-2", here.drain(), T0 - 61)
    there.load(b"w1-3", None, T0)
    assert there.get(old.id) is None
    assert len(there) == 1


def test_a_record_of_the_fates_topic_holds_many_fates_up_to_its_size():
    clock = Clock()
    here, there = FateStore(1000, 60, "w1", clock), FateStore(1000, 60, "w2", clock)
    envelopes = [Envelope.stamp({"n": n}, ["A"], id=f'odd\tid\n{n}"') for n in range(300)]
    for envelope in envelopes:
        here.record(ended(envelope, "A", "delivered"))
    records = []
    while (record := here.drain(max_bytes=16 * 1024)) is not None:
        records.append(record)
    assert len(records) > 1 and all(len(record) < 17 * 1024 for record in records)
    for n, record in enumerate(records):
        there.load(f"w1-{n}".encode(), record, T0)
    assert [there.get(envelope.id)["id"] for envelope in envelopes] == [envelope.id for envelope in envelopes]


def test_a_record_of_the_older_format_one_fate_keyed_by_its_message_is_still_read():
    there = FateStore(10, 60, "w2", Clock())
    there.load(b"old-id", b'{"id": "old-id", "status": "delivered"}', T0)
    there.load(b"w1-1", b"not a line\n" + b'"fine"\t{"id": "fine", "status": "dropped"}', T0)
    assert there.get("old-id")["status"] == "delivered"
    assert there.get("fine")["status"] == "dropped"
    assert len(there) == 2


def test_a_workers_own_fates_read_back_from_the_topic_are_not_stored_again():
    clock = Clock()
    here = FateStore(10, 60, "w1", clock)
    first, second = Envelope.stamp({}, ["A"]), Envelope.stamp({}, ["A"])
    here.record(ended(first, "A", "delivered"))
    here.record(ended(second, "A", "dropped", "no email"))
    here.load(b"w1-1", here.drain(), T0)
    assert all(not isinstance(entry[2], bytes) for entry in here.entries.values())
    assert list(here.entries) == [first.id, second.id]  # their order (the eviction order) is unchanged
    here.load(b"elsewhere", b'{"id": "elsewhere", "status": "delivered"}', T0)
    assert here.get("elsewhere")["status"] == "delivered"


def test_the_queue_of_fates_to_publish_is_bounded_too():
    store = FateStore(5, 60, "w1", Clock())
    for _ in range(12):
        store.record(ended(Envelope.stamp({}, ["A"]), "A", "delivered"))
    assert len(list(fate_lines(b"w1-1", store.drain()))) == 5


def test_messages_without_an_id_or_an_envelope_are_not_recorded():
    store = FateStore(10, 60, "w1", Clock())
    store.record(Outcome("Log", "dead_lettered", "InvalidEnvelope"))
    store.record(ended(Envelope({"route": []}, {}), "Log", "delivered"))
    assert len(store) == 0


async def test_the_bus_records_every_fate_of_its_messages():
    app = create_app(Settings(app_id="unit-fates", store="memory://"))
    bus = app.bus

    async def nowhere(topic: str, key: bytes | None, value: bytes) -> None:
        pass

    bus.sender = nowhere

    @bus.stop("Check")
    def check(payload: dict) -> dict:
        if payload.get("drop"):
            raise Drop("told to drop")
        if payload.get("fail"):
            raise KeyError("fail")
        return payload

    messages = {}
    for kind in ("ok", "drop", "fail"):
        envelope = Envelope.stamp({kind: True}, ["Check"])
        envelope.pop_next()
        envelope.add_hop("busdriver", T0, T0, "w0")
        messages[kind] = envelope.id
        await bus.handle("Check", check, b"k", envelope.to_bytes())
    fates = app.watch.fates
    assert fates.get(messages["ok"])["status"] == "delivered"
    assert fates.get(messages["drop"])["detail"] == "told to drop"
    failed = fates.get(messages["fail"])
    assert (failed["status"], failed["detail"], failed["message"]) == ("dead_lettered", "KeyError", "'fail'")
    assert [hop["stop"] for hop in failed["hops"]] == ["busdriver", "Check"]
    assert len(list(fate_lines(b"w1-1", fates.drain()))) == 3


def test_no_fates_are_kept_when_the_count_is_zero():
    app = create_app(Settings(app_id="unit-nofates", store="memory://", fates_max=0))
    assert app.watch.fates.record not in app.bus.observers


@pytest.mark.parametrize(("env", "value"), [("METROBUS_FATES_MAX", 5), ("METROBUS_FATES_TTL_S", 10)])
def test_the_bounds_are_settings(env, value):
    settings = Settings.from_env({env: str(value)})
    assert (settings.fates_max, settings.fates_ttl_s) == (
        (value, 3600) if env == "METROBUS_FATES_MAX" else (100_000, value)
    )


async def test_the_copies_of_a_fan_out_each_have_their_fate_under_the_message():
    app = create_app(Settings(app_id="unit-fanout-fates", store="memory://"))
    bus = app.bus
    sent: list[tuple[str, bytes]] = []

    async def keep(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append((topic, value))

    bus.sender = keep

    @bus.stop("A")
    def a(payload: dict) -> dict:
        return payload

    @bus.stop("B")
    def b(payload: dict) -> dict:
        raise Drop("B does not want it")

    @bus.busdriver()
    def route(record: dict) -> list:
        return ["A+B"]

    outcome = await bus.handle_record("busdriver", route, b"k", json.dumps({"x": 1}).encode())
    assert outcome.detail == "A+B"
    message_id = outcome.envelope.id
    fate = app.watch.fates.get(message_id)
    assert fate["status"] == "in_transit"
    for topic, value in list(sent):
        await bus.handle(topic, {"A": a, "B": b}[topic], b"k", value)
    fate = app.watch.fates.get(message_id)
    assert fate["status"] == "copied"
    assert [(c["copy"], c["status"], c["stop"]) for c in fate["copies"]] == [
        ("1", "delivered", "A"),
        ("2", "dropped", "B"),
    ]
    assert where(fate) == (
        "copied: sent on to A+B by busdriver; copy 1: delivered: its route ended at A; "
        "copy 2: dropped at B: B does not want it"
    )
    # Published under their own keys, and found the same way on another worker.
    there = FateStore(10, 60, "w2")
    there.load(b"w1-1", app.watch.fates.drain(), time.time())
    assert [(c["copy"], c["status"]) for c in there.get(message_id)["copies"]] == [("1", "delivered"), ("2", "dropped")]
    # Forgetting a copy's record forgets it in the index too.
    there.max_count = 1
    there.load(b"other", b'{"id": "other", "status": "delivered"}', time.time())
    assert there.get(message_id) is None
    assert there.copies == {}


# --- recovery: retries, compensation, deadlines -------------------------------------------------

DUE = 1_800_000_300  # 2027-01-15T08:05:00Z


def retrying(envelope: Envelope, stop: str, where_: str, message: str, at: float = T0, **header) -> Outcome:
    envelope.header.update(header)
    return Outcome(stop, "retrying", where_, envelope=envelope, received_at=at - 0.001, elapsed=0.001, message=message)


def test_a_retry_in_a_delay_topic_says_which_attempt_is_next_and_when_from_the_header():
    store = FateStore(10, 60, "w1", Clock())
    envelope = Envelope.stamp({"x": 1}, ["AddEmail", "Log"])
    store.record(moved(envelope, "busdriver", "AddEmail", T0 - 2))
    retry = {"stop": "AddEmail", "attempt": 3, "of": 5, "due": DUE}
    message = "attempt 2 of 5 failed: TimeoutError: lookup timed out; next due at 2027-01-15T08:05:00Z"
    store.record(retrying(envelope, "AddEmail", "metrobus-retry-5s", message, attempts=2, retry=retry))
    fate = store.get(envelope.id)
    assert fate["status"] == "retrying"
    assert (fate["stop"], fate["detail"], fate["message"]) == ("AddEmail", "metrobus-retry-5s", message)
    assert (fate["attempt"], fate["of"], fate["due"]) == (3, 5, "2027-01-15T08:05:00Z")
    assert fate["error"] == "TimeoutError: lookup timed out"
    assert where(fate) == (
        "waiting to retry AddEmail (attempt 3 of 5, due at 2027-01-15T08:05:00Z) in metrobus-retry-5s;"
        " attempt 2 failed: TimeoutError: lookup timed out"
    )
    assert not store.pending  # not an end: nothing to publish
    # the delay agent sends it back: in transit to AddEmail again
    store.record(moved(envelope, "metrobus-retry-5s", "AddEmail", T0 + 300))
    assert where(store.get(envelope.id)).startswith("in transit: sent on to AddEmail by metrobus-retry-5s")


def test_a_retry_in_place_is_read_from_the_message_when_the_header_does_not_say():
    store = FateStore(10, 60, "w1", Clock())
    envelope = Envelope.stamp({"x": 1}, ["AddEmail"])
    message = "attempt 2 of 5 failed: ConnectionError: refused; next in place"
    store.record(retrying(envelope, "AddEmail", "in place", message))
    fate = store.get(envelope.id)
    assert (fate["attempt"], fate["of"], fate["due"], fate["error"]) == (3, 5, None, "ConnectionError: refused")
    assert where(fate) == "retrying at AddEmail in place (attempt 3 of 5); attempt 2 failed: ConnectionError: refused"
    # a delay topic's due time read from the message, the header silent too
    other = Envelope.stamp({"x": 2}, ["AddEmail"])
    message = "attempt 3 of 5 failed: TimeoutError: slow; next due at 2026-12-01T11:50:00Z"
    store.record(retrying(other, "AddEmail", "metrobus-retry-60s", message))
    assert where(store.get(other.id)).startswith(
        "waiting to retry AddEmail (attempt 4 of 5, due at 2026-12-01T11:50:00Z) in metrobus-retry-60s"
    )
    # nothing to go by: still a sentence
    bare = Envelope.stamp({"x": 3}, ["AddEmail"])
    store.record(retrying(bare, "AddEmail", "in place", ""))
    assert where(store.get(bare.id)) == "retrying at AddEmail in place"


def test_retrying_and_compensating_never_replace_an_end():
    store = FateStore(10, 60, "w1", Clock())
    envelope = Envelope.stamp({"x": 1}, ["AddEmail"])
    store.record(ended(envelope, "AddEmail", "delivered"))
    store.record(retrying(envelope, "AddEmail", "in place", "attempt 1 of 3 failed: TimeoutError: t; next in place"))
    store.record(Outcome("AddEmail", "compensating", "KeyError", envelope=envelope, received_at=T0, elapsed=0.001))
    assert store.get(envelope.id)["status"] == "delivered"
    assert len(store.pending) == 1


def being_compensated(envelope: Envelope, failed_at: str, error: str, text: str, undone: list[str]) -> Envelope:
    """The header as wire.compensation.begin and undone leave it."""
    envelope.header["compensating"] = {"stop": failed_at, "error": error, "message": text, "undone": undone}
    return envelope


def test_a_compensated_message_says_which_stop_failed_why_and_what_was_undone():
    store = FateStore(10, 60, "w1", Clock())
    envelope = Envelope.stamp({"order": 7}, ["Reserve", "Charge", "Ship"])
    being_compensated(envelope, "Ship", "Fault", "no courier", [])
    store.record(ended(envelope, "Ship", "compensating", "Fault", at=T0 - 2, message="no courier"))
    fate = store.get(envelope.id)
    assert fate["status"] == "compensating" and (fate["failed_at"], fate["undone"]) == ("Ship", [])
    assert (
        where(fate) == "compensating after Ship failed: Fault: no courier; undoing the stops done before, newest first"
    )
    assert not store.pending
    being_compensated(envelope, "Ship", "Fault", "no courier", ["Charge"])
    store.record(ended(envelope, "Charge", "compensating", "Fault", at=T0 - 1, message="no courier"))
    assert where(store.get(envelope.id)).endswith("newest first; undone: Charge")
    being_compensated(envelope, "Ship", "Fault", "no courier", ["Charge", "Reserve"])
    store.record(ended(envelope, "Reserve", "compensated", "Fault", message="no courier"))
    fate = store.get(envelope.id)
    assert (fate["status"], fate["stop"], fate["failed_at"]) == ("compensated", "Reserve", "Ship")
    assert where(fate) == "compensated after Ship failed: Fault: no courier; undone: Charge, Reserve; dead-lettered"
    # published and read back by another worker: the same story
    other = FateStore(10, 60, "w2", Clock())
    other.load(None, store.drain(), T0)
    assert other.get(envelope.id) == fate


def test_a_failed_compensation_and_an_expired_message_are_ends_with_their_sentences():
    store = FateStore(10, 60, "w1", Clock())
    stuck = being_compensated(Envelope.stamp({}, ["Reserve", "Ship"]), "Ship", "KeyError", "'courier'", [])
    store.record(ended(stuck, "Reserve", "compensation_failed", "CompensationFailed", message="release: refused"))
    late = Envelope.stamp({}, ["Reserve", "Ship"], deadline_s=1)
    store.record(ended(late, "Ship", "expired", "DeadlinePassed", message="2.5 s past its deadline"))
    plain = Envelope.stamp({}, ["Ship"])  # no compensation story in its header
    store.record(ended(plain, "Ship", "compensated", "KeyError", message="'courier'"))
    assert where(store.get(stuck.id)) == (
        "compensation failed at Reserve: release: refused (after Ship failed: KeyError: 'courier'); dead-lettered"
    )
    assert where(store.get(late.id)) == "expired at Ship: 2.5 s past its deadline; dead-lettered"
    # the stop that failed unknown here (never seen compensating): the sentence does not guess it
    assert (
        where(store.get(plain.id)) == "compensated after KeyError: 'courier'; the last stop undone: Ship; dead-lettered"
    )
    other = FateStore(10, 60, "w2", Clock())
    other.load(None, store.drain(), T0)
    assert [other.get(e.id)["status"] for e in (stuck, late, plain)] == [
        "compensation_failed",
        "expired",
        "compensated",
    ]
    assert (
        decode_fate("x", json.dumps(["expired", "S", "DeadlinePassed", "", [], "w", 1.0, 2.0]).encode())["stop"] == "S"
    )


def test_the_stops_undone_are_forwarded_compensating_and_the_end_keeps_the_story_it_had():
    """As core/recovery does it: the undo stops forward the message with header.compensating;
    the last one dead-letters it with the envelope as it failed (no compensating header)."""
    store = FateStore(10, 60, "w1", Clock())
    envelope = Envelope.stamp({"order": 7}, ["Reserve", "Charge", "Ship"])
    being_compensated(envelope, "Ship", "Fault", "no courier", ["Charge"])
    store.record(Outcome("Charge", "forwarded", "Reserve", envelope=envelope, received_at=T0 - 1, elapsed=0.001))
    fate = store.get(envelope.id)
    assert (fate["status"], fate["failed_at"], fate["undone"]) == ("compensating", "Ship", ["Charge"])
    assert where(fate) == (
        "compensating after Ship failed: Fault: no courier; undoing the stops done before, newest first; undone: Charge"
    )
    original = Envelope(dict(envelope.header), envelope.payload)
    del original.header["compensating"]
    store.record(Outcome("Reserve", "compensated", "Fault", envelope=original, received_at=T0, message="no courier"))
    fate = store.get(envelope.id)
    assert (fate["status"], fate["stop"], fate["failed_at"]) == ("compensated", "Reserve", "Ship")
    assert where(fate) == "compensated after Ship failed: Fault: no courier; undone: Charge, Reserve; dead-lettered"
