"""Counters, percentiles, rates, dead letters and merging of the stats behind /metrobus/stats/."""

from __future__ import annotations

import json
import random

import pytest

from metrobus_app import Envelope
from metrobus_app.observe.stats import (
    DEAD_LETTERS_KEPT,
    EXCERPT_CHARS,
    FOLD_AT,
    SLOT_S,
    SLOTS,
    BusStats,
    Histogram,
    Window,
    bucket,
    merge,
    percentile,
    upper_bound,
    view,
)
from metrobus_app.wire.outcome import Outcome

T0 = 1_800_000_000.0  # a fixed "now", on a 5 s slot boundary
# recovery's fates and the counter of a stop that counts each
RECOVERY = {
    "retrying": "retried",
    "compensating": "compensating",
    "compensated": "compensated",
    "compensation_failed": "compensation_failed",
    "expired": "expired",
}


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def outcome(stop: str, fate: str, detail: str = "", *, at: float = T0, elapsed: float = 0.001, **kw) -> Outcome:
    return Outcome(stop, fate, detail, received_at=at - elapsed, elapsed=elapsed, **kw)


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(q * len(ordered) + 0.999999) - 1)]


# --- buckets and percentiles --------------------------------------------------------------


def test_a_bucket_holds_the_durations_up_to_its_upper_bound():
    for k in range(-100, 40):
        assert bucket(upper_bound(k)) == k
        assert bucket(upper_bound(k) * 1.001) == k + 1
    assert bucket(0) == bucket(-1) == bucket(1e-9) == -120
    assert bucket(10_000) == 40  # above 100 s: the last bucket


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_from_buckets_are_within_six_percent(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(-6, 1.2) for _ in range(20_000)]  # around 2.5 ms, long tail
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    for q in (0.5, 0.9, 0.99):
        got = percentile(histogram.counts, q)
        assert got == pytest.approx(exact(values, q), rel=0.065), q
    assert histogram.total == pytest.approx(sum(values))
    assert percentile({}, 0.5) is None


def test_histograms_of_two_workers_merge_into_the_histogram_of_both():
    rng = random.Random(7)
    a, b = [rng.expovariate(200) for _ in range(3000)], [rng.expovariate(20) for _ in range(1000)]
    stats_a, stats_b, stats_all = BusStats(Clock()), BusStats(Clock()), BusStats(Clock())
    for values, stats in ((a, stats_a), (b, stats_b), (a + b, stats_all)):
        for value in values:
            stats.record(outcome("S", "forwarded", "T", elapsed=value))
    merged = merge([json.loads(json.dumps(stats_a.snapshot(T0))), stats_b.snapshot(T0)])
    assert merged["stops"]["S"]["processing"] == stats_all.snapshot(T0)["stops"]["S"]["processing"]
    assert view(merged)["stops"]["S"]["processing_ms"] == view(stats_all.snapshot(T0))["stops"]["S"]["processing_ms"]


# --- counters -----------------------------------------------------------------------------


def test_counters_by_fate_reason_and_error_keep_the_keys_of_the_stats_view():
    stats = BusStats(Clock())
    stats.record(outcome("busdriver", "forwarded", "AddEmail"))
    stats.record(outcome("busdriver", "forwarded", "AddEmail"))
    stats.record(outcome("AddEmail", "forwarded", "Log"))
    stats.record(outcome("AddEmail", "dropped", "no email for account"))
    stats.record(outcome("Log", "delivered"))
    stats.record(outcome("Log", "dead_lettered", "InvalidEnvelope", message="value is not JSON"))
    stops = view(stats.snapshot())["stops"]
    assert stops["busdriver"]["received"] == 2
    assert stops["busdriver"]["forwarded_to"] == {"AddEmail": 2}
    assert stops["AddEmail"] == {
        **stops["AddEmail"],
        "received": 2,
        "forwarded": 1,
        "forwarded_to": {"Log": 1},
        "delivered": 0,
        "dropped": 1,
        "dropped_by_reason": {"no email for account": 1},
        "dead_lettered": 0,
        "dead_lettered_by_error": {},
    }
    assert stops["Log"]["delivered"] == 1
    assert stops["Log"]["dead_lettered_by_error"] == {"InvalidEnvelope": 1}
    assert stops["Log"]["processing_ms"]["count"] == 2
    assert stats.as_dict() == stops
    # the attribute API the bus's own tests use
    assert stats["AddEmail"].dropped == {"no email for account": 1}


def test_end_to_end_latency_is_from_the_stamp_to_delivery():
    clock = Clock()
    stats = BusStats(clock)
    for latency in (0.010, 0.020, 0.030, 0.040, 1.0):
        envelope = Envelope.stamp({"x": 1}, ["Log"], stamped_at=T0 - latency)
        stats.record(outcome("Log", "delivered", envelope=envelope))
    # neither a drop nor a legacy envelope without a stamp is an end-to-end latency
    stats.record(outcome("Log", "dropped", "no", envelope=Envelope.stamp({}, ["Log"], stamped_at=T0 - 5)))
    legacy = Envelope({"route": []}, {})
    stats.record(outcome("Log", "delivered", envelope=legacy))
    bus = view(stats.snapshot())["bus"]
    assert bus["delivered"] == 6
    assert bus["e2e_ms"]["count"] == 5
    assert bus["e2e_ms"]["p50"] == pytest.approx(30, rel=0.07)
    assert bus["e2e_ms"]["p99"] == pytest.approx(1000, rel=0.07)
    assert bus["e2e_ms_last_minute"] == bus["e2e_ms"]
    clock.now += 120
    assert view(stats.snapshot())["bus"]["e2e_ms_last_minute"] == {"p50": None, "p99": None, "count": 0}


def test_counting_in_folds_gives_what_counting_one_by_one_gives():
    rng = random.Random(11)
    stats = BusStats(Clock(T0 + 120))
    stops = ["busdriver", "AddEmail", "Log"]
    fates = ["forwarded", "delivered", "dropped", "dead_lettered", *RECOVERY]
    expected: dict[str, dict] = {stop: {"received": 0, "fates": {}, "buckets": {}, "total": 0.0} for stop in stops}
    window_by_stop: dict[str, Window] = {stop: Window() for stop in stops}
    for i in range(3 * FOLD_AT + 17):  # two minutes of outcomes, several folds' worth
        stop, fate, detail = rng.choice(stops), rng.choice(fates), rng.choice(["a", "b"])
        at, elapsed = T0 + i * 120 / (3 * FOLD_AT), rng.lognormvariate(-7, 1.5)
        stats.record(outcome(stop, fate, detail, at=at, elapsed=elapsed))
        want = expected[stop]
        want["received"] += 1
        want["fates"][fate, detail] = want["fates"].get((fate, detail), 0) + 1
        want["buckets"][bucket(elapsed)] = want["buckets"].get(bucket(elapsed), 0) + 1
        want["total"] += elapsed
        window_by_stop[stop].add((at - elapsed) + elapsed, bucket(elapsed))  # when done, as the stats add it up
        assert len(stats.stops[stop].pending) < FOLD_AT  # recording never keeps more than a fold's worth
    for stop in stops:
        got, want = stats[stop], expected[stop]
        assert got.received == want["received"]
        assert dict(got.forwarded) == {d: n for (f, d), n in want["fates"].items() if f == "forwarded"}
        assert dict(got.dropped) == {d: n for (f, d), n in want["fates"].items() if f == "dropped"}
        assert dict(got.dead_lettered) == {d: n for (f, d), n in want["fates"].items() if f == "dead_lettered"}
        for fate, counter in RECOVERY.items():
            assert dict(getattr(got, counter)) == {d: n for (f, d), n in want["fates"].items() if f == fate}, fate
        assert got.delivered == sum(n for (f, _), n in want["fates"].items() if f == "delivered")
        assert dict(got.processing.counts) == want["buckets"]
        assert got.processing.total == pytest.approx(want["total"])
        assert got.recent.recent(T0 + 120) == window_by_stop[stop].recent(T0 + 120)


def test_a_window_does_not_count_what_is_older_than_its_slot():
    window = Window()
    window.add(T0, -60)
    window.add(T0 - SLOTS * SLOT_S, -60)  # the same slot a minute earlier: too old, not counted over the newer
    window.add(T0 - SLOT_S, -50, 3)
    assert window.recent(T0) == (4, {-60: 1, -50: 3})


# --- rates over the last minute ----------------------------------------------------------------


def test_the_rate_is_over_the_last_minute():
    clock = Clock(T0 - 600)
    stats = BusStats(clock)  # started 10 minutes before T0
    for i in range(600):  # 10 messages a second during the 60 s before T0
        stats.record(outcome("S", "forwarded", "T", at=T0 - 60 + i / 10))
    for i in range(100):  # and 100 long before, which must not count
        stats.record(outcome("S", "forwarded", "T", at=T0 - 300 + i / 100))
    rate = view(stats.snapshot(T0))["stops"]["S"]["rate_per_s"]
    assert rate == pytest.approx(10, rel=0.1)
    recent = view(stats.snapshot(T0))["stops"]["S"]["processing_ms_last_minute"]
    assert 550 <= recent["count"] <= 600
    assert view(stats.snapshot(T0 + 61))["stops"]["S"]["rate_per_s"] == 0
    assert view(stats.snapshot(T0 + 61))["stops"]["S"]["received"] == 700


def test_a_young_worker_divides_by_its_age_not_by_a_minute():
    stats = BusStats(Clock(T0))
    for i in range(50):
        stats.record(outcome("S", "forwarded", "T", at=T0 + i / 10))
    assert view(stats.snapshot(T0 + 5))["stops"]["S"]["rate_per_s"] == pytest.approx(10, rel=0.05)


# --- dead letters --------------------------------------------------------------------------------


def test_the_latest_dead_letters_are_kept_newest_first_and_cut_short():
    stats = BusStats(Clock())
    for i in range(DEAD_LETTERS_KEPT + 5):
        envelope = Envelope.stamp({"i": i, "text": "x" * 1000}, ["S"])
        stats.record(outcome("S", "dead_lettered", "KeyError", at=T0 + i, envelope=envelope, message=f"boom {i}"))
    stats.record(outcome("S", "dead_lettered", "InvalidEnvelope", at=T0 + 100, message="value is not JSON"))
    letters = stats.snapshot()["dead_letters"]
    assert len(letters) == DEAD_LETTERS_KEPT
    assert letters[0] == {
        "time": T0 + 100,
        "stop": "S",
        "fate": "dead_lettered",
        "error": "InvalidEnvelope",
        "message": "value is not JSON",
        "id": None,
        "trace_id": None,
        "payload": None,
    }
    assert letters[1]["message"] == f"boom {DEAD_LETTERS_KEPT + 4}"
    assert letters[1]["payload"].startswith('{"i": 24, "text": "xxx')
    assert len(letters[1]["payload"]) == EXCERPT_CHARS
    assert letters[-1]["message"] == "boom 6"


# --- the cluster: merging snapshots -------------------------------------------------------------


def test_merged_snapshots_add_counters_rates_and_interleave_dead_letters():
    a, b = BusStats(Clock(T0 - 100)), BusStats(Clock(T0 - 100))
    for i in range(30):
        a.record(outcome("S", "forwarded", "T", at=T0 - 30 + i))
        a.record(outcome("T", "dropped", "no", at=T0 - 30 + i))
    for i in range(10):
        b.record(outcome("S", "forwarded", "U", at=T0 - 10 + i))
        b.record(outcome("T", "dead_lettered", "KeyError", at=T0 - 10 + i, message=f"b{i}"))
    a.record(outcome("T", "dead_lettered", "ValueError", at=T0 - 5, message="a"))
    # snapshots travel as JSON between workers
    merged = view(merge(json.loads(json.dumps(s.snapshot(T0))) for s in (a, b)))
    s = merged["stops"]["S"]
    assert s["received"] == 40
    assert s["forwarded_to"] == {"T": 30, "U": 10}
    # at T0 the window is the 11 full 5 s slots before it: 55 s
    assert s["rate_per_s"] == pytest.approx(40 / 55, rel=0.01)
    t = merged["stops"]["T"]
    assert t["dropped_by_reason"] == {"no": 30}
    assert t["dead_lettered_by_error"] == {"KeyError": 10, "ValueError": 1}
    assert [d["message"] for d in merged["dead_letters"][:3]] == ["b9", "b8", "b7"]
    assert "a" in [d["message"] for d in merged["dead_letters"]]
    assert view(merge([]))["stops"] == {}


# --- recovery: retries, compensation, deadlines -------------------------------------------------

DELAY_5S, DELAY_60S = "metrobus-retry-5s", "metrobus-retry-60s"


def test_recovery_fates_have_counters_of_their_own_and_are_not_dead_letters():
    stats = BusStats(Clock())
    for _ in range(3):
        stats.record(outcome("AddEmail", "retrying", "in place", message="attempt 1 of 5 failed: TimeoutError: t"))
    stats.record(outcome("AddEmail", "retrying", DELAY_5S))
    stats.record(outcome("AddEmail", "compensating", "TimeoutError", message="lookup timed out"))
    stats.record(outcome("Reserve", "compensated", "TimeoutError"))
    stats.record(outcome("Reserve", "compensation_failed", "CompensationFailed"))
    stats.record(outcome("WhiteList", "expired", "DeadlinePassed"))
    stats.record(outcome("WhiteList", "expired", "DeadlinePassed"))
    stats.record(outcome("WhiteList", "something_new", "Why"))  # a fate unknown here: dead-lettered, as before
    assert stats["AddEmail"].retried == {"in place": 3, DELAY_5S: 1}
    assert stats["AddEmail"].compensating == {"TimeoutError": 1}
    assert stats["AddEmail"].dead_lettered == {}
    assert stats["Reserve"].dead_lettered == {}
    assert stats["WhiteList"].dead_lettered == {"Why": 1}
    stops = view(stats.snapshot())["stops"]
    add_email, reserve, white_list = stops["AddEmail"], stops["Reserve"], stops["WhiteList"]
    assert add_email["received"] == 5  # every attempt is received
    assert (add_email["retried"], add_email["retried_by_where"]) == (4, {"in place": 3, DELAY_5S: 1})
    assert (add_email["compensating"], add_email["compensating_by_error"]) == (1, {"TimeoutError": 1})
    assert (reserve["compensated"], reserve["compensated_by_error"]) == (1, {"TimeoutError": 1})
    assert reserve["compensation_failed"] == 1
    assert reserve["compensation_failed_by_error"] == {"CompensationFailed": 1}
    assert (white_list["expired"], white_list["expired_by_reason"]) == (2, {"DeadlinePassed": 2})
    assert (white_list["dead_lettered"], reserve["dead_lettered"], add_email["dead_lettered"]) == (1, 0, 0)
    bus = view(stats.snapshot())["bus"]
    assert (bus["retried"], bus["compensated"], bus["compensation_failed"], bus["expired"]) == (4, 1, 1, 2)


def test_the_ends_of_recovery_are_listed_with_the_latest_dead_letters():
    stats = BusStats(Clock())
    envelope = Envelope.stamp({"order": 7}, ["Reserve", "Pay"])
    stats.record(outcome("Reserve", "compensated", "CardDeclined", at=T0 + 1, envelope=envelope, message="no"))
    stats.record(outcome("Pay", "expired", "DeadlinePassed", at=T0 + 2, message="3 s late"))
    stats.record(outcome("Pay", "compensation_failed", "CompensationFailed", at=T0 + 3))
    stats.record(outcome("Pay", "retrying", "in place", at=T0 + 4))  # not an end
    stats.record(outcome("Pay", "compensating", "CardDeclined", at=T0 + 5))  # not an end either
    letters = stats.snapshot()["dead_letters"]
    assert [(d["fate"], d["stop"], d["error"]) for d in letters] == [
        ("compensation_failed", "Pay", "CompensationFailed"),
        ("expired", "Pay", "DeadlinePassed"),
        ("compensated", "Reserve", "CardDeclined"),
    ]
    assert letters[2]["id"] == envelope.id and letters[2]["payload"] == '{"order": 7}'


def test_a_traced_dead_letter_carries_its_trace_id():
    stats = BusStats(Clock())
    envelope = Envelope.stamp({"order": 7}, ["Pay"])
    envelope.header["trace"] = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    stats.record(outcome("Pay", "dead_lettered", "KeyError", at=T0, envelope=envelope))
    stats.record(outcome("Pay", "dead_lettered", "KeyError", at=T0 + 1, envelope=Envelope.stamp({}, ["Pay"])))
    assert [d["trace_id"] for d in stats.snapshot()["dead_letters"]] == [None, "0af7651916cd43dd8448eb211c80319c"]


def test_recovery_counters_merge_across_workers_and_with_an_older_worker():
    a, b = BusStats(Clock()), BusStats(Clock())
    a.record(outcome("AddEmail", "retrying", "in place"))
    a.record(outcome("AddEmail", "retrying", DELAY_5S))
    b.record(outcome("AddEmail", "retrying", DELAY_5S))
    b.record(outcome("Pay", "compensated", "KeyError"))
    b.record(outcome("Pay", "expired", "DeadlinePassed"))
    older = {"stops": {"AddEmail": {**b.snapshot(T0)["stops"]["AddEmail"]}}}
    for key in RECOVERY.values():
        del older["stops"]["AddEmail"][key]  # a worker from before recovery
    merged = merge(json.loads(json.dumps(s)) for s in (a.snapshot(T0), b.snapshot(T0), older))
    assert merged["stops"]["AddEmail"]["retried"] == {"in place": 1, DELAY_5S: 2}
    assert merged["stops"]["AddEmail"]["received"] == 4
    assert merged["stops"]["Pay"]["compensated"] == {"KeyError": 1}
    stops = view(merged)["stops"]
    assert stops["Pay"]["expired"] == 1 and stops["AddEmail"]["retried"] == 3
    assert view(older)["stops"]["AddEmail"]["retried"] == 0  # an older worker's own snapshot views too


def test_waiting_to_retry_is_what_went_to_the_delay_topics_minus_what_their_agents_sent_back():
    stats = BusStats(Clock())
    for _ in range(5):
        stats.record(outcome("AddEmail", "retrying", DELAY_5S))
    for _ in range(2):
        stats.record(outcome("WhiteList", "retrying", DELAY_5S))
    for _ in range(3):
        stats.record(outcome("WhiteList", "retrying", DELAY_60S))
    for _ in range(4):
        stats.record(outcome("AddEmail", "retrying", "in place"))  # never in a delay topic
    for _ in range(4):
        stats.record(outcome(DELAY_5S, "forwarded", "AddEmail"))  # the 5 s tier's agent sent 4 back
    stats.record(outcome(DELAY_5S, "forwarded", "WhiteList"))
    bus = view(stats.snapshot())["bus"]
    assert bus["waiting_by_delay_topic"] == {DELAY_5S: 7 - 5, DELAY_60S: 3}
    assert bus["waiting_to_retry"] == 5
    assert bus["retried"] == 14


def test_waiting_to_retry_adds_up_across_workers_and_is_never_below_zero():
    stop_worker, delay_worker = BusStats(Clock()), BusStats(Clock())
    for _ in range(3):
        stop_worker.record(outcome("AddEmail", "retrying", DELAY_5S))
    for _ in range(2):
        delay_worker.record(outcome(DELAY_5S, "forwarded", "AddEmail"))  # another worker's agent sent them back
    cluster = view(merge([stop_worker.snapshot(T0), delay_worker.snapshot(T0)]))["bus"]
    assert (cluster["waiting_to_retry"], cluster["waiting_by_delay_topic"]) == (1, {DELAY_5S: 1})
    alone = view(delay_worker.snapshot(T0))["bus"]  # this worker sent back what it never saw sent there
    assert (alone["waiting_to_retry"], alone["waiting_by_delay_topic"]) == (0, {})
    assert view(stop_worker.snapshot(T0))["bus"]["waiting_to_retry"] == 3
