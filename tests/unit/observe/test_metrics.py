"""Prometheus metrics, read from the bus's counters when scraped."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from metrobus_app import Envelope, Settings, create_app
from metrobus_app.observe.metrics import cumulative, exposition
from metrobus_app.observe.stats import BusStats, bucket
from metrobus_app.wire.outcome import Outcome


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def record(stats: BusStats, stop: str, fate: str, detail: str = "", elapsed: float = 0.002, **kw) -> None:
    stats.record(Outcome(stop, fate, detail, received_at=time.time() - elapsed, elapsed=elapsed, **kw))


def test_metrics_have_per_stop_labels_and_histograms():
    app = create_app(Settings(app_id="unit-metrics", store="memory://"))
    stats = app.bus.stats
    for _ in range(3):
        record(stats, "busdriver", "forwarded", "AddEmail", elapsed=0.0005)
    record(stats, "AddEmail", "dropped", "no email for account", elapsed=0.003)
    record(stats, "AddEmail", "forwarded", "Log", elapsed=0.004)
    record(stats, "Log", "dead_lettered", "KeyError")
    envelope = Envelope.stamp({}, ["Log"], stamped_at=time.time() - 0.05)
    record(stats, "Log", "delivered", envelope=envelope)
    got = samples(exposition(app.watch.metrics).decode())
    assert got[("metrobus_received_total", (("stop", "busdriver"),))] == 3
    assert got[("metrobus_forwarded_total", (("stop", "busdriver"), ("to", "AddEmail")))] == 3
    assert got[("metrobus_dropped_total", (("reason", "no email for account"), ("stop", "AddEmail")))] == 1
    assert got[("metrobus_dead_lettered_total", (("error", "KeyError"), ("stop", "Log")))] == 1
    assert got[("metrobus_delivered_total", (("stop", "Log"),))] == 1
    assert got[("metrobus_processing_seconds_count", (("stop", "AddEmail"),))] == 2
    assert got[("metrobus_processing_seconds_bucket", (("le", "0.001"), ("stop", "busdriver")))] == 3
    assert got[("metrobus_processing_seconds_bucket", (("le", "0.001"), ("stop", "AddEmail")))] == 0
    assert got[("metrobus_processing_seconds_bucket", (("le", "0.00562341"), ("stop", "AddEmail")))] == 2
    assert abs(got[("metrobus_processing_seconds_sum", (("stop", "AddEmail"),))] - 0.007) < 1e-9
    assert got[("metrobus_e2e_latency_seconds_count", ())] == 1
    assert got[("metrobus_e2e_latency_seconds_bucket", (("le", "0.0316228"),))] == 0
    assert got[("metrobus_e2e_latency_seconds_bucket", (("le", "0.0562341"),))] == 1
    assert got[("metrobus_fates_kept", ())] == 0  # these outcomes did not go through the bus


def test_prometheus_buckets_are_cumulative_and_exact_at_their_edges():
    counts = {bucket(0.001): 2, bucket(0.0011): 3, bucket(50): 1, bucket(500): 4}
    buckets = dict(cumulative(counts))
    assert buckets["0.001"] == 2
    assert buckets["0.00177828"] == 5
    assert buckets["56.2341"] == 6
    assert buckets["100"] == 10  # above 100 s, counted in the last bucket
    assert buckets["+Inf"] == 10
    values = [v for _, v in cumulative(counts)]
    assert values == sorted(values)


def test_retries_compensations_and_expiry_have_metrics_and_a_gauge_of_messages_waiting_to_retry():
    app = create_app(Settings(app_id="unit-metrics-recovery", store="memory://"))
    stats = app.bus.stats
    for _ in range(2):
        record(stats, "AddEmail", "retrying", "in place")
    for _ in range(5):
        record(stats, "AddEmail", "retrying", "metrobus-retry-5s")
    record(stats, "WhiteList", "retrying", "metrobus-retry-60s")
    for _ in range(3):
        record(stats, "metrobus-retry-5s", "forwarded", "AddEmail")  # its delay agent sent 3 back
    record(stats, "AddEmail", "compensating", "TimeoutError")
    record(stats, "busdriver", "compensated", "TimeoutError")
    record(stats, "WhiteList", "compensation_failed", "CompensationFailed")
    record(stats, "WhiteList", "expired", "DeadlinePassed")
    record(stats, "WhiteList", "expired", "DeadlinePassed")
    got = samples(exposition(app.watch.metrics).decode())
    assert got[("metrobus_retried_total", (("stop", "AddEmail"), ("where", "in place")))] == 2
    assert got[("metrobus_retried_total", (("stop", "AddEmail"), ("where", "metrobus-retry-5s")))] == 5
    assert got[("metrobus_retried_total", (("stop", "WhiteList"), ("where", "metrobus-retry-60s")))] == 1
    assert got[("metrobus_compensating_total", (("error", "TimeoutError"), ("stop", "AddEmail")))] == 1
    assert got[("metrobus_compensated_total", (("error", "TimeoutError"), ("stop", "busdriver")))] == 1
    assert got[("metrobus_compensation_failed_total", (("stop", "WhiteList"),))] == 1
    assert got[("metrobus_compensation_failed_total", (("stop", "AddEmail"),))] == 0
    assert got[("metrobus_expired_total", (("stop", "WhiteList"),))] == 2
    assert got[("metrobus_waiting_to_retry", ())] == 5 - 3 + 1
    # none of them is counted as dead-lettered
    assert not [key for key in got if key[0] == "metrobus_dead_lettered_total"]
