"""A fresh bus lists every declared stop at zero: in /metrobus/stats/, its cluster view and its metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from metrobus_app import Settings, create_app
from metrobus_app.observe.metrics import exposition
from metrobus_app.observe.stats import merge, view


def _bus(**settings):  # type: ignore[no-untyped-def]
    app = create_app(Settings(store="memory://", **settings))
    app.bus.busdriver()(lambda record: ["AddEmail", "Log"])
    app.bus.stop("AddEmail")(lambda payload: payload)
    app.bus.stop("Log")(lambda payload: None)
    return app


def test_before_any_message_every_declared_stop_is_listed_at_zero():
    app = _bus(app_id="unit-declared", external_stops=("Legacy",))
    stats = app.watch.stats()
    assert set(stats["stops"]) == {"busdriver", "AddEmail", "Log"}  # this worker's: the stops it runs
    assert set(stats["cluster"]["stops"]) == {"busdriver", "AddEmail", "Log", "Legacy"}
    assert stats["external_stops"] == ["Legacy"]  # listed, but what it does is not counted by metrobus
    for stop in (*stats["stops"].values(), *stats["cluster"]["stops"].values()):
        assert stop["received"] == stop["forwarded"] == stop["delivered"] == stop["dropped"] == 0
        assert stop["forwarded_to"] == {} and stop["processing_ms"] == {"p50": None, "p99": None, "count": 0}
    assert stats["cluster"]["workers"][app.watch.worker_id]["stops"]["Log"] == {"received": 0, "share": 0.0}
    assert stats["bus"]["delivered"] == 0 and stats["cluster"]["bus"]["delivered"] == 0


def test_a_worker_that_runs_some_stops_lists_those_and_the_cluster_lists_all():
    app = _bus(app_id="unit-declared-some", stops=("AddEmail",))
    stats = app.watch.stats()
    assert set(stats["stops"]) == {"AddEmail"}
    assert {"AddEmail", "Log"} <= set(stats["cluster"]["stops"])


def test_the_metrics_have_a_zero_series_for_each_stop_run_here_and_none_for_an_external_one():
    app = _bus(app_id="unit-declared-metrics", external_stops=("Legacy",))
    app.watch.snapshot()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition(app.watch.metrics).decode())
        for s in family.samples
    }
    for stop in ("busdriver", "AddEmail", "Log"):
        assert samples[("metrobus_received_total", (("stop", stop),))] == 0
        assert samples[("metrobus_processing_seconds_count", (("stop", stop),))] == 0
    assert not any(("stop", "Legacy") in labels for _, labels in samples)


def test_merging_keeps_the_counts_of_declared_stops_that_had_messages():
    merged = merge([{"stops": {"A": {"received": 3, "delivered": 3}}}], declared=["A", "B"])
    stops = view(merged)["stops"]
    assert stops["A"]["received"] == 3 and stops["B"]["received"] == 0
