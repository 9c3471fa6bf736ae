"""The pieces of the delivery guarantee: the guard on commits, limits, dead letters, reconciling."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from metrobus_app import Envelope, InvalidEnvelope, Settings
from metrobus_app.config.checks import check_guarantee
from metrobus_app.core.guards import HopLimitExceeded, check_envelope, check_hops
from metrobus_app.errors import ConfigError
from metrobus_app.observe.dead_letters import DeadLetter, choose, plan_replay, replay_record, summary
from metrobus_app.observe.reconcile import reconcile
from metrobus_app.runtime.delivery import DeliveryGuard
from metrobus_app.wire.envelope import arriving
from metrobus_app.wire.ids import REPLAY_COUNT_HEADER, REPLAY_ID_HEADER, source_id
from metrobus_app.wire.letters import LETTER_VALUE_BYTES, letter

SETTINGS = Settings(max_hops=4, max_route_stops=10)


async def test_a_failed_send_stops_every_later_commit():
    guard = DeliveryGuard()
    failures = []
    guard.on_failure = failures.append
    ok, bad = asyncio.get_running_loop().create_future(), asyncio.get_running_loop().create_future()
    guard.watch(ok)
    guard.watch(bad)
    ok.set_result("metadata")
    await asyncio.sleep(0)
    assert guard.may_commit()
    bad.set_exception(TimeoutError("no answer"))
    await asyncio.sleep(0)
    assert not guard.may_commit()
    assert [type(f) for f in failures] == [TimeoutError]


async def test_hooks_run_before_a_commit_and_a_failing_hook_blocks_it():
    guard, ran = DeliveryGuard(), []

    async def hook():
        ran.append(1)

    async def broken():
        raise RuntimeError("cannot hand over the fates")

    guard.before_commit(hook)
    await guard.run_hooks()
    assert ran == [1] and guard.may_commit()
    guard.before_commit(broken)
    await guard.run_hooks()
    assert not guard.may_commit()


def test_the_guarantee_setting_is_checked():
    check_guarantee(Settings(processing_guarantee="exactly_once"))
    with pytest.raises(ConfigError, match="use at_least_once or exactly_once"):
        check_guarantee(Settings(processing_guarantee="twice"))
    with pytest.raises(ConfigError, match="METROBUS_MAX_HOPS"):
        Settings.from_env({"METROBUS_MAX_HOPS": "0"})


def test_a_source_record_always_gets_the_same_id():
    assert source_id("Source", 1, 42, 1000) == source_id("Source", 1, 42, 1000)
    assert source_id("Source", 1, 42, 1000) != source_id("Source", 1, 43, 1000)
    assert len(source_id("Source", 0, 0, 0)) == 32


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"route": ["Log"] * 11}, "header.route has 11 stops, above METROBUS_MAX_ROUTE_STOPS=10"),
        ({"route": [], "historical_route": ["Log"] * 11}, "header.historical_route has 11 stops"),
        ({"route": [], "id": 7}, "header.id is a int, not a string"),
        ({"route": [], "max_hops": 0}, "header.max_hops is 0, not a whole number >= 1"),
        ({"route": [], "max_hops": True}, "header.max_hops is True"),
        ({"route": [], "replays": "1"}, "header.replays is '1'"),
        ({"route": [], "hops": {}}, "header.hops is a dict, not a list"),
    ],
)
def test_an_envelope_breaking_a_limit_is_invalid_with_a_precise_reason(header, reason):
    envelope = Envelope.from_value({"header": header, "payload": {}})
    with pytest.raises(InvalidEnvelope, match=reason.replace("[", r"\[").replace("(", r"\(")):
        check_envelope(envelope, SETTINGS)


def test_the_hop_limit_comes_from_the_header_or_the_setting():
    envelope = Envelope.stamp({}, ["A"] * 6)
    for _ in range(4):
        check_hops(envelope, SETTINGS)
        envelope.pop_next()
    with pytest.raises(HopLimitExceeded, match=r"sent to 4 stops; its limit is 4 \(METROBUS_MAX_HOPS\)"):
        check_hops(envelope, SETTINGS)
    envelope.header["max_hops"] = 10
    check_hops(envelope, SETTINGS)


def test_a_dead_letter_holds_what_a_replay_needs_and_stays_small():
    envelope = Envelope.stamp({"x": 1}, ["AddEmail", "Log"], replays=1)
    envelope.pop_next()
    body = letter("AddEmail", KeyError("x"), envelope.to_bytes(), 1.0, topic="AddEmail", envelope=envelope, replays=1)
    assert body["id"] == envelope.id and body["topic"] == "AddEmail" and body["replays"] == 1
    assert body["route"] == ["Log"] and body["replayable"] is True
    assert json.loads(body["value"])["payload"] == {"x": 1}
    huge = letter("Log", ValueError(), b"x" * (LETTER_VALUE_BYTES + 1), 1.0, topic="Log", envelope=envelope)
    assert huge["value_truncated"] and huge["value_bytes"] == LETTER_VALUE_BYTES + 1 and not huge["replayable"]
    garbage = letter("Log", InvalidEnvelope("no"), b"\xff", 1.0, topic="Log")
    assert garbage["value_base64"] == "/w==" and not garbage["replayable"]


def test_arriving_is_the_envelope_as_the_next_stop_gets_it():
    envelope = Envelope.stamp({}, ["A", "B", "C"])
    envelope.pop_next()
    after = json.loads(arriving(envelope))["header"]
    assert after["route"] == ["C"] and after["historical_route"] == ["A", "B"]
    assert envelope.route == ["C", "B"]  # unchanged


def _record(topic, partition, offset, value=None, key=None, headers=(), timestamp=1000):
    return SimpleNamespace(
        topic=topic, partition=partition, offset=offset, value=value, key=key, headers=headers, timestamp=timestamp
    )


def _fate(message_id, status, detail=""):
    return _record("metrobus-fates", 0, 0, json.dumps({"id": message_id, "status": status, "detail": detail}).encode())


def test_reconcile_counts_each_message_once_and_lists_duplicates_and_the_missing():
    source = [_record("Source", 0, offset) for offset in range(5)]
    source.append(_record("Source", 0, 5, headers=[(REPLAY_ID_HEADER, b"x"), (REPLAY_COUNT_HEADER, b"1")]))
    ids = [source_id("Source", 0, offset, 1000) for offset in range(5)]
    fates = [
        _fate(ids[0], "delivered"),
        _fate(ids[1], "dropped", "no email for account"),
        _fate(ids[2], "dead_lettered", "KeyError"),
        _fate(ids[2], "delivered"),  # replayed, then delivered
        _fate(ids[3], "delivered"),
        _fate(ids[3], "delivered"),  # a duplicate
        _fate("elsewhere", "delivered"),
    ]
    ledger = [_record("metrobus-replayed", 0, 0, json.dumps({"id": ids[2]}).encode(), key=b"0:7")]
    result = reconcile(source, fates, ledger)
    assert (result.pushed, result.replayed_records) == (5, 1)
    assert result.fates == {"delivered": 3, "dropped": 1}
    assert result.unaccounted == [ids[4]] and not result.balanced
    assert result.duplicates == {ids[3]: 1}
    assert result.not_from_source == 1 and result.replays == 1
    assert "unaccounted: 1" in "\n".join(result.lines())


def test_reconcile_reads_records_that_hold_many_fates():
    source = [_record("Source", 0, offset) for offset in range(3)]
    ids = [source_id("Source", 0, offset, 1000) for offset in range(3)]
    lines = [json.dumps(i).encode() + b"\t" + json.dumps({"id": i, "status": "delivered"}).encode() for i in ids]
    fates = [_record("metrobus-fates", 0, 0, b"\n".join(lines[:2]), key=b"run-1"), _fate(ids[2], "dropped", "why")]
    result = reconcile(source, fates, [])
    assert result.fates == {"delivered": 2, "dropped": 1}
    assert result.balanced


def test_reconcile_counts_fan_out_copies_apart_from_duplicates():
    source = [_record("Source", 0, offset) for offset in range(2)]
    ids = [source_id("Source", 0, offset, 1000) for offset in range(2)]

    def copy_fate(message_id, copy, status="delivered"):
        body = {"id": message_id, "status": status, "detail": "", "copy": copy}
        return _record("metrobus-fates", 0, 0, json.dumps(body).encode())

    fates = [copy_fate(ids[0], "1"), copy_fate(ids[0], "2"), copy_fate(ids[1], "1"), copy_fate(ids[1], "1")]
    result = reconcile(source, fates, [])
    assert result.fates == {"delivered": 2}
    assert result.duplicates == {ids[1]: 1}
    assert result.unaccounted == []


def _letter(offset, stop="Flaky", error="RuntimeError", replays=0, replayable=True, **body):
    value = json.dumps({"header": {"route": ["Log"], "historical_route": ["Flaky"], "id": f"m{offset}"}, "payload": {}})
    fields = {"stop": stop, "error": error, "message": "boom", "id": f"m{offset}", "topic": stop}
    fields.update(replays=replays, replayable=replayable, value=value, **body)
    return DeadLetter(0, offset, b"k", fields)


def test_dead_letters_are_chosen_summed_capped_and_sent_back_with_one_more_replay():
    letters = [_letter(0), _letter(1, replays=3), _letter(2, error="KeyError", replayable=False), _letter(3)]
    letters[3].replayed = True
    chosen = choose(letters, stop="Flaky")
    assert [x.offset for x in chosen] == [0, 1, 2]
    assert [x.offset for x in choose(letters, ids=["m1"])] == [1]
    assert summary(chosen)[0][:4] == ("Flaky", "RuntimeError", 2, 2)
    report = plan_replay(chosen, max_replays=3)
    assert [x.offset for x in report.replayed] == [0]
    assert [x.offset for x in report.over_limit] == [1]
    assert [x.offset for x in report.not_replayable] == [2]
    topic, value, headers = replay_record(letters[0], Settings())
    assert topic == "Flaky" and headers == []
    assert json.loads(value)["header"] == {"route": ["Log"], "historical_route": ["Flaky"], "id": "m0", "replays": 1}
    raw = DeadLetter(0, 9, b"k", {"topic": "Source", "value": '{"x": 1}', "id": "abc", "replays": 1})
    assert replay_record(raw, Settings()) == (
        "Source",
        b'{"x": 1}',
        [(REPLAY_ID_HEADER, b"abc"), (REPLAY_COUNT_HEADER, b"2")],
    )


def test_a_replay_starts_the_failed_stops_attempts_again_and_keeps_the_undo_stack():
    header = {
        "route": [],
        "historical_route": ["Reserve", "Charge"],
        "id": "m7",
        "attempts": 4,
        "retry": {"stop": "Charge", "attempt": 5, "of": 5, "due": 1.0},
        "compensate": [{"stop": "Reserve", "log": {"hold": "h-7"}}],
    }
    letter = _letter(7, stop="Charge")
    letter.body["value"] = json.dumps({"header": header, "payload": {"id": 7}})
    topic, value, _ = replay_record(letter, Settings())
    sent = json.loads(value)["header"]
    assert topic == "Charge"
    assert "attempts" not in sent and "retry" not in sent
    assert sent["compensate"] == [{"stop": "Reserve", "log": {"hold": "h-7"}}]
    assert sent["replays"] == 1
