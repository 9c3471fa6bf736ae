"""What each stop of this worker has done with its messages, counted in memory.

Recording an outcome is O(1): an append to its stop's list, counted in folds (a few
counters, a histogram bucket, a slot of the last-minute window; ``StopStats.fold``), and
the end-to-end latency of a delivered one. Everything else happens when someone looks: ``BusStats.snapshot()``
gives plain JSON that sums across workers (``merge``), and ``view()`` turns a snapshot,
one worker's or the cluster's, into what ``/metrobus/stats/`` shows.

Durations go into fixed logarithmic buckets, 20 per decade (each about 12 % wide) from
1 µs to 100 s: two workers' histograms merge by adding counts, and a percentile read from
them is within about 6 % of the true value.
"""

from __future__ import annotations

import json
import math
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from operator import floordiv
from typing import TYPE_CHECKING, Any

from metrobus_app.config.redaction import redact_known
from metrobus_app.wire.envelope import trace_id_of
from metrobus_app.wire.outcome import (
    COMPENSATED,
    COMPENSATING,
    COMPENSATION_FAILED,
    DEAD_LETTERED,
    DELIVERED,
    DROPPED,
    EXPIRED,
    FORWARDED,
    RETRYING,
)

if TYPE_CHECKING:
    from metrobus_app.wire.outcome import Outcome

BUCKETS_PER_DECADE = 20
MIN_BUCKET, MAX_BUCKET = -6 * BUCKETS_PER_DECADE, 2 * BUCKETS_PER_DECADE  # 1 µs .. 100 s
SLOT_S, SLOTS = 5, 12  # the last minute, in 5 s slots
FOLD_AT = 4096  # outcomes a stop's stats keep before counting them
WINDOW_S = SLOT_S * SLOTS
DEAD_LETTERS_KEPT = 20
EXCERPT_CHARS = 300
IN_PLACE = "in place"  # the detail of a retry at the stop itself; any other detail names a delay topic
#: Counters of a stop by detail (next stop, reason, error, where retried), as the snapshot names them.
COUNTED_BY = {
    FORWARDED: "forwarded",
    DROPPED: "dropped",
    DEAD_LETTERED: "dead_lettered",
    RETRYING: "retried",
    COMPENSATING: "compensating",
    COMPENSATED: "compensated",
    COMPENSATION_FAILED: "compensation_failed",
    EXPIRED: "expired",
}
COUNTERS = tuple(COUNTED_BY.values())
RECOVERY_COUNTERS = ("retried", "compensating", "compensated", "compensation_failed", "expired")
#: The ends that also dead-letter the message (listed with the latest dead letters).
DEAD_LETTER_FATES = (DEAD_LETTERED, COMPENSATED, COMPENSATION_FAILED, EXPIRED)


def upper_bound(k: int) -> float:
    """The largest duration bucket ``k`` holds, in seconds."""
    return 10 ** (k / BUCKETS_PER_DECADE)


_UPPER_BOUNDS = [upper_bound(k) for k in range(MIN_BUCKET, MAX_BUCKET)]


def bucket(seconds: float) -> int:
    """The bucket of a duration: bucket k holds (10^((k-1)/20), 10^(k/20)] seconds (a binary search, in C)."""
    return MIN_BUCKET + bisect_left(_UPPER_BOUNDS, seconds)


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The ``q``-quantile (0..1) of bucketed durations, in seconds: the middle of its bucket."""
    total = sum(counts.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for k in sorted(counts):
        seen += counts[k]
        if seen >= rank:
            return 10 ** ((k - 0.5) / BUCKETS_PER_DECADE) if k > MIN_BUCKET else upper_bound(k)
    raise AssertionError("unreachable")


@dataclass
class Histogram:
    """Durations counted in logarithmic buckets, with their sum (for Prometheus)."""

    counts: Counter[int] = field(default_factory=Counter)
    total: float = 0.0

    def add(self, seconds: float) -> int:
        """Count a duration; returns its bucket."""
        k = bucket(seconds)
        self.counts[k] += 1
        self.total += seconds
        return k

    def add_many(self, buckets: Mapping[int, int], total: float) -> None:
        """Count durations already put in buckets (bucket -> how many), ``total`` their sum."""
        counts = self.counts
        for k, n in buckets.items():
            counts[k] += n
        self.total += total


class Window:
    """The last minute of one series, in 5 s slots: how many, and their durations' buckets.

    Adding reuses the slot of the current 5 s (emptying it when it held an older 5 s), so
    nothing ever needs cleaning up and the memory is fixed. What is older than the slot it
    would go to is not counted.
    """

    __slots__ = ("current", "slots")

    def __init__(self) -> None:
        self.slots: list[list[Any]] = [[-1, 0, Counter()] for _ in range(SLOTS)]
        self.current = self.slots[0]  # the slot added to last

    def add(self, now: float, k: int, n: int = 1) -> None:
        """Count ``n`` durations of bucket ``k`` that ended at ``now``."""
        number = int(now // SLOT_S)
        slot = self.current
        if slot[0] != number:
            slot = self.slots[number % SLOTS]
            if slot[0] > number:
                return
            self.current = slot
            if slot[0] != number:
                slot[0], slot[1], slot[2] = number, 0, Counter()
        slot[1] += n
        slot[2][k] += n

    def recent(self, now: float) -> tuple[int, Counter[int]]:
        """How many in the last minute (the current slot and the 11 before it), and their buckets."""
        newest = int(now // SLOT_S)
        n, counts = 0, Counter[int]()
        for number, count, buckets in self.slots:
            if newest - SLOTS < number <= newest:
                n += count
                counts.update(buckets)
        return n, counts

    @staticmethod
    def seconds(now: float, started: float) -> float:
        """How long the window covers: a minute, or less (but at least a second) while the worker is younger."""
        window_start = (int(now // SLOT_S) - SLOTS + 1) * SLOT_S
        return max(now - max(window_start, started), 1.0)


@dataclass
class StopStats:
    """Counters of one stop; ``forwarded`` counts by the stop sent to.

    ``received`` counts every outcome, so a message tried three times here counts three.
    Recovery: ``retried`` counts failed attempts tried again, by where (``"in place"`` or
    the delay topic); ``compensating`` failures for good that started undoing the stops
    done, by error; ``compensated``, ``compensation_failed`` and ``expired`` the ends, by
    detail (the original error, ``CompensationFailed``, ``DeadlinePassed``).

    Recording an outcome appends it to ``pending``; ``fold`` counts what is pending, mostly
    in C (``map``, ``Counter``), before anything is read and whenever ``FOLD_AT`` are pending:
    counting each outcome as it came took about 13,000 instructions (benchmarks/README.md).
    """

    received: int = 0
    delivered: int = 0
    forwarded: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    compensating: Counter[str] = field(default_factory=Counter)
    compensated: Counter[str] = field(default_factory=Counter)
    compensation_failed: Counter[str] = field(default_factory=Counter)
    expired: Counter[str] = field(default_factory=Counter)
    processing: Histogram = field(default_factory=Histogram)
    recent: Window = field(default_factory=Window)
    pending: list[tuple[float, float, str, str]] = field(default_factory=list, repr=False, compare=False)

    def fold(self) -> None:
        """Count the pending outcomes: (when done, how long, fate, detail) each."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        done, elapsed, fates, details = zip(*pending, strict=True)
        self.received += len(pending)
        indexes = list(map(bisect_left, repeat(_UPPER_BOUNDS), elapsed))
        self.processing.add_many({MIN_BUCKET + i: n for i, n in Counter(indexes).items()}, sum(elapsed))
        slots = Counter(zip(map(int, map(floordiv, done, repeat(SLOT_S))), indexes, strict=True))
        for (number, index), n in sorted(slots.items()):
            self.recent.add(number * SLOT_S, MIN_BUCKET + index, n)
        for (fate, detail), n in Counter(zip(fates, details, strict=True)).items():
            if fate == DELIVERED:
                self.delivered += n
            else:  # a fate unknown here is counted as dead-lettered, as it was before recovery's fates
                counter: Counter[str] = getattr(self, COUNTED_BY.get(fate, "dead_lettered"))
                counter[detail] += n

    def snapshot(self, now: float, started: float) -> dict[str, Any]:
        """Mergeable JSON: counters, processing-time buckets, and the last minute's."""
        self.fold()
        n, counts = self.recent.recent(now)
        return {
            "received": self.received,
            "delivered": self.delivered,
            **{key: dict(getattr(self, key)) for key in COUNTERS},
            "processing": _buckets(self.processing.counts),
            "processing_sum": self.processing.total,
            "recent": {"count": n, "rate": n / Window.seconds(now, started), "processing": _buckets(counts)},
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (counters and latencies)."""
        now = time.time()
        return stop_view(self.snapshot(now, now - WINDOW_S))


class BusStats:
    """Counters of every stop that ran in this worker, end-to-end latency, the latest dead letters."""

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self.started = clock()
        self.stops: dict[str, StopStats] = {}
        self.e2e = Histogram()
        self.e2e_recent = Window()
        self.dead_letters: deque[tuple[Any, ...]] = deque(maxlen=DEAD_LETTERS_KEPT)

    def declare(self, stops: Iterable[str]) -> None:
        """List these stops from the start, at zero, before their first message."""
        for stop in stops:
            if stop not in self.stops:
                self.stops[stop] = StopStats()

    def __getitem__(self, stop: str) -> StopStats:
        """The stats of ``stop``, every outcome recorded so far counted."""
        stats = self.stops.get(stop)
        if stats is None:
            stats = self.stops[stop] = StopStats()
        stats.fold()
        return stats

    def record(self, outcome: Outcome) -> None:
        """Count one message's outcome (the bus calls this for every message)."""
        stats = self.stops.get(outcome.stop) or self[outcome.stop]
        elapsed, fate = outcome.elapsed, outcome.fate
        done = outcome.received_at + elapsed
        pending = stats.pending
        pending.append((done, elapsed, fate, outcome.detail))
        if len(pending) >= FOLD_AT:
            stats.fold()
        if fate == "delivered":
            stamped = outcome.envelope.header.get("stamped_at") if outcome.envelope is not None else None
            if isinstance(stamped, (int, float)):
                latency = max(done - stamped, 0.0)
                self.e2e_recent.add(done, self.e2e.add(latency))
        elif fate in DEAD_LETTER_FATES:
            # The payload stays a reference here; it is cut to an excerpt only when someone looks.
            envelope = outcome.envelope
            self.dead_letters.append(
                (
                    done,
                    outcome.stop,
                    outcome.detail,
                    outcome.message,
                    envelope.id if envelope is not None else None,
                    envelope.payload if envelope is not None else None,
                    fate,
                    trace_id_of(envelope.header) if envelope is not None else None,
                )
            )

    def fold(self) -> None:
        """Count every stop's pending outcomes (``StopStats.fold``)."""
        for stats in self.stops.values():
            stats.fold()

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """This worker's numbers as mergeable JSON (what it publishes for the cluster view)."""
        now = self.clock() if now is None else now
        n, counts = self.e2e_recent.recent(now)
        return {
            "stops": {name: stats.snapshot(now, self.started) for name, stats in sorted(self.stops.items())},
            "e2e": _buckets(self.e2e.counts),
            "e2e_sum": self.e2e.total,
            "e2e_recent": {"count": n, "processing": _buckets(counts)},
            "dead_letters": [_letter(*letter) for letter in reversed(self.dead_letters)],
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view of every stop."""
        return view(self.snapshot())["stops"]


def _buckets(counts: Mapping[int, int]) -> dict[str, int]:
    return {str(k): n for k, n in counts.items() if n}


def _letter(
    time_: float,
    stop: str,
    error: str,
    message: str,
    id_: str | None,
    payload: Any,
    fate: str = DEAD_LETTERED,
    trace_id: str | None = None,
) -> dict[str, Any]:
    return {
        "time": time_,
        "stop": stop,
        "fate": fate,
        "error": error,
        "message": redact_known(message)[:EXCERPT_CHARS],
        "id": id_,
        "trace_id": trace_id,
        "payload": None if payload is None else _excerpt(payload),
    }


def _excerpt(payload: Any) -> str:
    try:
        text = json.dumps(payload, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(payload)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


# --- merging and viewing snapshots ------------------------------------------------------


def merge(snapshots: Iterable[Mapping[str, Any]], declared: Iterable[str] = ()) -> dict[str, Any]:
    """Add up several workers' snapshots: counters, buckets and rates add; dead letters interleave.

    The ``declared`` stops are there too, at zero when no snapshot has them.
    """
    stops: dict[str, dict[str, Any]] = {name: _empty_stop() for name in declared}
    e2e: Counter[str] = Counter()
    e2e_recent: Counter[str] = Counter()
    e2e_sum, e2e_recent_count = 0.0, 0
    letters: list[dict[str, Any]] = []
    for snapshot in snapshots:
        for name, stop in snapshot.get("stops", {}).items():
            into = stops.setdefault(name, _empty_stop())
            for key in ("received", "delivered", "processing_sum"):
                into[key] += stop.get(key, 0)
            for key in (*COUNTERS, "processing"):
                into[key].update(stop.get(key, {}))  # a worker of an older version has no recovery counters
            recent = stop.get("recent", {})
            into["recent"]["count"] += recent.get("count", 0)
            into["recent"]["rate"] += recent.get("rate", 0.0)
            into["recent"]["processing"].update(recent.get("processing", {}))
        e2e.update(snapshot.get("e2e", {}))
        e2e_sum += snapshot.get("e2e_sum", 0.0)
        e2e_recent_count += snapshot.get("e2e_recent", {}).get("count", 0)
        e2e_recent.update(snapshot.get("e2e_recent", {}).get("processing", {}))
        letters.extend(snapshot.get("dead_letters", []))
    letters.sort(key=lambda letter: letter.get("time", 0), reverse=True)
    return {
        "stops": {name: _plain(stop) for name, stop in sorted(stops.items())},
        "e2e": dict(e2e),
        "e2e_sum": e2e_sum,
        "e2e_recent": {"count": e2e_recent_count, "processing": dict(e2e_recent)},
        "dead_letters": letters[:DEAD_LETTERS_KEPT],
    }


def _empty_stop() -> dict[str, Any]:
    return {
        "received": 0,
        "delivered": 0,
        **{key: Counter() for key in COUNTERS},
        "processing": Counter(),
        "processing_sum": 0.0,
        "recent": {"count": 0, "rate": 0.0, "processing": Counter()},
    }


def _plain(stop: dict[str, Any]) -> dict[str, Any]:
    """Counters back to plain dicts, so a merged snapshot is JSON like any other."""
    out = {key: dict(value) if isinstance(value, Counter) else value for key, value in stop.items()}
    out["recent"] = {**stop["recent"], "processing": dict(stop["recent"]["processing"])}
    return out


def _ints(counts: Mapping[str, int]) -> dict[int, int]:
    return {int(k): n for k, n in counts.items()}


def latency(counts: Mapping[str, int]) -> dict[str, Any]:
    """p50 and p99 in milliseconds (None before anything was measured) and how many were measured."""
    buckets = _ints(counts)
    p50, p99 = percentile(buckets, 0.5), percentile(buckets, 0.99)
    return {
        "p50": None if p50 is None else round(p50 * 1000, 3),
        "p99": None if p99 is None else round(p99 * 1000, 3),
        "count": sum(buckets.values()),
    }


def stop_view(stop: Mapping[str, Any]) -> dict[str, Any]:
    """One stop's snapshot as the stats view shows it: each counter's total, and by detail."""
    forwarded, dropped, dead = stop["forwarded"], stop["dropped"], stop["dead_lettered"]
    recovery = {key: dict(stop.get(key, {})) for key in RECOVERY_COUNTERS}
    return {
        "received": stop["received"],
        "forwarded": sum(forwarded.values()),
        "forwarded_to": dict(forwarded),
        "delivered": stop["delivered"],
        "dropped": sum(dropped.values()),
        "dropped_by_reason": dict(dropped),
        "dead_lettered": sum(dead.values()),
        "dead_lettered_by_error": dict(dead),
        "retried": sum(recovery["retried"].values()),
        "retried_by_where": recovery["retried"],
        "compensating": sum(recovery["compensating"].values()),
        "compensating_by_error": recovery["compensating"],
        "compensated": sum(recovery["compensated"].values()),
        "compensated_by_error": recovery["compensated"],
        "compensation_failed": sum(recovery["compensation_failed"].values()),
        "compensation_failed_by_error": recovery["compensation_failed"],
        "expired": sum(recovery["expired"].values()),
        "expired_by_reason": recovery["expired"],
        "rate_per_s": round(stop["recent"]["rate"], 3),
        "processing_ms": latency(stop["processing"]),
        "processing_ms_last_minute": latency(stop["recent"]["processing"]),
    }


def waiting_to_retry(stops: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Messages waiting in each delay topic, from the stops' views: sent there minus sent back.

    Sent there: the retries of every stop whose ``retried_by_where`` names the topic; sent
    back: what the topic's delay agent (a stop named like the topic) forwarded. A topic's
    figure is never below 0 (workers' snapshots are taken at slightly different times).
    """
    sent: Counter[str] = Counter()
    for stop in stops.values():
        for where, n in stop.get("retried_by_where", {}).items():
            if where != IN_PLACE:
                sent[where] += n
    return {
        topic: max(n - (stops[topic]["forwarded"] if topic in stops else 0), 0) for topic, n in sorted(sent.items())
    }


def view(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot (one worker's, or merged) as the stats view shows it: stops, bus, dead letters."""
    stops = {name: stop_view(stop) for name, stop in sorted(snapshot.get("stops", {}).items())}
    waiting = waiting_to_retry(stops)

    def total(key: str) -> int:
        return sum(stop[key] for stop in stops.values())

    return {
        "stops": stops,
        "bus": {
            "delivered": total("delivered"),
            "retried": total("retried"),
            "waiting_to_retry": sum(waiting.values()),
            "waiting_by_delay_topic": waiting,
            "compensated": total("compensated"),
            "compensation_failed": total("compensation_failed"),
            "expired": total("expired"),
            "e2e_ms": latency(snapshot.get("e2e", {})),
            "e2e_ms_last_minute": latency(snapshot.get("e2e_recent", {}).get("processing", {})),
        },
        "dead_letters": list(snapshot.get("dead_letters", [])),
    }
