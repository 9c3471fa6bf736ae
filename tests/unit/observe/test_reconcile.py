"""Reconciling a run: the ends of recovery (compensated, compensation failed, expired) are ends too."""

from __future__ import annotations

import json
from types import SimpleNamespace

from metrobus_app.observe.reconcile import reconcile
from metrobus_app.wire.ids import source_id
from metrobus_app.wire.outcome import TERMINAL


def _record(topic, partition, offset, value=None, key=None, headers=(), timestamp=1000):
    return SimpleNamespace(
        topic=topic, partition=partition, offset=offset, value=value, key=key, headers=headers, timestamp=timestamp
    )


def _fate(message_id, status, detail=""):
    return _record("metrobus-fates", 0, 0, json.dumps({"id": message_id, "status": status, "detail": detail}).encode())


def _run(statuses):
    source = [_record("Source", 0, offset) for offset in range(len(statuses))]
    ids = [source_id("Source", 0, offset, 1000) for offset in range(len(statuses))]
    details = {"compensated": "TimeoutError", "compensation_failed": "CompensationFailed", "expired": "DeadlinePassed"}
    fates = [_fate(i, status, details.get(status, "")) for i, status in zip(ids, statuses, strict=True) if status]
    return ids, reconcile(source, fates, [])


def test_every_end_of_terminal_accounts_for_a_pushed_message_once():
    _, result = _run(["delivered", "dropped", "dead_lettered", "compensated", "compensation_failed", "expired"])
    assert result.pushed == result.accounted == 6 and result.balanced
    assert result.fates == dict.fromkeys(TERMINAL, 1)
    assert result.duplicates == {} and result.unaccounted == []
    body = result.as_dict()
    assert (body["compensated"], body["compensation_failed"], body["expired"]) == (1, 1, 1)
    assert body["dead_lettered"] == 1  # the recovery ends are not counted again as dead-lettered
    assert body["reasons"]["compensated"] == {"TimeoutError": 1}
    assert body["reasons"]["expired"] == {"DeadlinePassed": 1}
    text = "\n".join(result.lines())
    assert "compensated:   1  (TimeoutError: 1)  (dead-lettered too)" in text
    assert "undo failed:   1  (CompensationFailed: 1)" in text
    assert "expired:       1  (DeadlinePassed: 1)" in text
    assert "accounted for: 6 of 6; unaccounted: 0" in text


def test_the_keys_and_lines_of_a_run_without_recovery_are_as_they_were():
    _, result = _run(["delivered", "dropped"])
    body = result.as_dict()
    for key in ("pushed", "delivered", "dropped", "dead_lettered", "accounted", "unaccounted", "balanced"):
        assert key in body
    assert (body["compensated"], body["compensation_failed"], body["expired"]) == (0, 0, 0)
    assert not [line for line in result.lines() if "compensated" in line or "expired" in line or "undo" in line]


def test_a_message_still_retrying_or_compensating_is_not_accounted_for():
    ids, result = _run(["delivered", "retrying", "compensating", None])
    assert result.accounted == 1 and not result.balanced
    assert result.unaccounted == sorted(ids[1:])
    assert set(result.fates) == {"delivered"}


def test_a_compensated_message_replayed_and_then_delivered_counts_once_by_its_last_fate():
    source = [_record("Source", 0, 0)]
    message = source_id("Source", 0, 0, 1000)
    fates = [_fate(message, "compensated", "TimeoutError"), _fate(message, "delivered")]
    ledger = [_record("metrobus-replayed", 0, 0, json.dumps({"id": message}).encode(), key=b"0:1")]
    result = reconcile(source, fates, ledger)
    assert result.fates == {"delivered": 1} and result.balanced and result.duplicates == {}
    twice = reconcile(source, [_fate(message, "expired"), _fate(message, "expired")], [])
    assert twice.fates == {"expired": 1} and twice.duplicates == {message: 1}
