"""Prometheus metrics of one worker, read from the bus's own counters when scraped.

Nothing is counted twice and nothing runs per message: a collector turns ``BusStats`` into
Prometheus counters and histograms at scrape time. Each worker exposes its own numbers (at
``/metrobus/metrics``); Prometheus adds the ``instance`` label and sums across workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from metrobus_app.observe.stats import BUCKETS_PER_DECADE, BusStats, Histogram, upper_bound, waiting_to_retry

if TYPE_CHECKING:
    from metrobus_app.observe.fates import FateStore

# Prometheus buckets: 4 a decade from 100 µs to 100 s, each the edge of one of our finer buckets.
PROMETHEUS_BUCKETS = tuple(range(-4 * BUCKETS_PER_DECADE, 2 * BUCKETS_PER_DECADE + 1, BUCKETS_PER_DECADE // 4))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def cumulative(counts: Mapping[int, int]) -> list[tuple[str, float]]:
    """Our fine buckets as Prometheus ``le`` buckets (cumulative, ending with +Inf)."""
    ordered = sorted(counts.items())
    result: list[tuple[str, float]] = []
    seen, i = 0, 0
    for k in PROMETHEUS_BUCKETS:
        while i < len(ordered) and ordered[i][0] <= k:
            seen += ordered[i][1]
            i += 1
        result.append((f"{upper_bound(k):.6g}", seen))
    result.append(("+Inf", sum(counts.values())))
    return result


class BusCollector(Collector):
    """Per-stop counters and processing-time histograms, the end-to-end latency, the fates kept.

    Recovery: retries by where (``in place`` or the delay topic), compensations begun and
    ended by error, failed compensations and expired messages per stop, and the messages
    this worker's numbers say wait in delay topics (sent there by its stops minus sent back
    by its delay agents: the cluster's figure is in ``/metrobus/stats/``).
    """

    def __init__(self, stats: BusStats, fates: FateStore | None = None) -> None:
        self.stats = stats
        self.fates = fates

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        stats.fold()
        received = CounterMetricFamily("metrobus_received", "Messages a stop received.", labels=["stop"])
        forwarded = CounterMetricFamily(
            "metrobus_forwarded", "Messages a stop sent on, by the stop sent to.", labels=["stop", "to"]
        )
        delivered = CounterMetricFamily(
            "metrobus_delivered", "Messages whose route ended at this stop.", labels=["stop"]
        )
        dropped = CounterMetricFamily(
            "metrobus_dropped", "Messages a stop dropped, by reason.", labels=["stop", "reason"]
        )
        dead = CounterMetricFamily(
            "metrobus_dead_lettered", "Messages a stop dead-lettered, by error type.", labels=["stop", "error"]
        )
        retried = CounterMetricFamily(
            "metrobus_retried",
            "Failed attempts a stop tries again, by where: in place or the delay topic.",
            labels=["stop", "where"],
        )
        compensating = CounterMetricFamily(
            "metrobus_compensating",
            "Messages that failed for good at a stop and whose stops done are being undone, by error type.",
            labels=["stop", "error"],
        )
        compensated = CounterMetricFamily(
            "metrobus_compensated",
            "Messages undone and dead-lettered, by the error that failed them; the stop is the last one undone.",
            labels=["stop", "error"],
        )
        compensation_failed = CounterMetricFamily(
            "metrobus_compensation_failed", "Compensations that failed after their retries.", labels=["stop"]
        )
        expired = CounterMetricFamily(
            "metrobus_expired", "Messages that reached a stop past their deadline.", labels=["stop"]
        )
        processing = HistogramMetricFamily(
            "metrobus_processing_seconds", "Time a stop took per message, send included.", labels=["stop"]
        )
        for name, stop in sorted(stats.stops.items()):
            received.add_metric([name], stop.received)
            delivered.add_metric([name], stop.delivered)
            for to, n in sorted(stop.forwarded.items()):
                forwarded.add_metric([name, to], n)
            for reason, n in sorted(stop.dropped.items()):
                dropped.add_metric([name, reason], n)
            for error, n in sorted(stop.dead_lettered.items()):
                dead.add_metric([name, error], n)
            for where, n in sorted(stop.retried.items()):
                retried.add_metric([name, where], n)
            for error, n in sorted(stop.compensating.items()):
                compensating.add_metric([name, error], n)
            for error, n in sorted(stop.compensated.items()):
                compensated.add_metric([name, error], n)
            compensation_failed.add_metric([name], sum(stop.compensation_failed.values()))
            expired.add_metric([name], sum(stop.expired.values()))
            processing.add_metric([name], **_histogram(stop.processing))
        e2e = HistogramMetricFamily(
            "metrobus_e2e_latency_seconds", "From the busdriver's stamp to delivery, per delivered message."
        )
        e2e.add_metric([], **_histogram(stats.e2e))
        yield from (received, forwarded, delivered, dropped, dead, processing, e2e)
        yield from (retried, compensating, compensated, compensation_failed, expired)
        stops = {
            name: {"retried_by_where": stop.retried, "forwarded": sum(stop.forwarded.values())}
            for name, stop in stats.stops.items()
        }
        yield GaugeMetricFamily(
            "metrobus_waiting_to_retry",
            "Messages waiting in delay topics, as this worker counts them (its stops' retries there minus"
            " what its delay agents sent back).",
            sum(waiting_to_retry(stops).values()),
        )
        if self.fates is not None:
            yield GaugeMetricFamily("metrobus_fates_kept", "Messages whose fate this worker keeps.", len(self.fates))


def _histogram(histogram: Histogram) -> dict[str, Any]:
    return {"buckets": cumulative(histogram.counts), "sum_value": histogram.total}


def registry(stats: BusStats, fates: FateStore | None = None) -> CollectorRegistry:
    """A registry of one bus's metrics only (not the process-wide default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BusCollector(stats, fates))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The metrics in Prometheus's text exposition format."""
    return generate_latest(registry)
