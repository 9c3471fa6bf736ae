"""Watching the bus on real workers: the stats view equals what the topics hold, for the whole cluster.

Two workers of one group run the demo bus at once; a known run of records goes through it.
Each worker's ``/metrobus/stats/`` must then show, for the cluster, exactly what the topics
show (every topic's records are what its stop received), each worker's share must add up,
``/metrobus/messages/{id}`` must tell the fate of a delivered, a dropped and a dead-lettered
message on either worker, and ``/metrobus/metrics`` must have per-stop series.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metrobus_app import Envelope

from .conftest import Worker, bus_env, make_and_warm, produce, read_topic, run_cli

pytestmark = pytest.mark.integration

ACCOUNTS, PUSHED = 1000, 600
STOP_TOPICS = ("Source", "AddEmail", "WhiteList", "Log")
SCRIPT = "<script>alert(1)</script>"


def url(worker: Worker) -> str:
    return f"http://127.0.0.1:{worker.port}"


def wait_until_both_hold_partitions(a: Worker, b: Worker, timeout: float = 60) -> None:
    """Poll Faust's router until both workers see the same assignment, each holding part of every stop's topic."""
    deadline = time.monotonic() + timeout
    while True:
        views = [a.get("/router/topics"), b.get("/router/topics")]
        shared = views[0] == views[1] and set(views[0]) == {url(a), url(b)}
        if shared and all(views[0][host].get(topic) for host in views[0] for topic in STOP_TOPICS):
            return
        assert time.monotonic() < deadline, f"the group never shared the topics between the workers: {views}"
        time.sleep(0.3)


def envelopes(records: list) -> list[dict]:
    """The records that are envelopes (the bad value sent to Log is not)."""
    found = []
    for _, value in records:
        with contextlib.suppress(ValueError):
            found.append(json.loads(value))
    return found


def ids(records: list) -> set[str]:
    return {envelope["header"]["id"] for envelope in envelopes(records)}


def message(worker: Worker, message_id: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{url(worker)}/metrobus/messages/{message_id}", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_for_fate(worker: Worker, message_id: str, status: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, fate = message(worker, message_id)
        if code == 200 and fate["status"] == status:
            return fate
        assert time.monotonic() < deadline, f"{message_id} never {status} on {url(worker)}: {code} {fate}"
        time.sleep(0.3)


def test_two_workers_show_the_whole_cluster_as_the_topics_do(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    data = tmp_path / "data"
    make_and_warm(env, data, ACCOUNTS, seed=3)

    a, b = workers("a"), workers("b")
    for worker in (a, b):
        worker.wait_ready()
    wait_until_both_hold_partitions(a, b)
    for worker in (a, b):
        worker.wait_caches({"emails": 800, "whitelist": 400})

    pushed = run_cli(env, "push", "--count", str(PUSHED), "--accounts", str(ACCOUNTS), "--seed", "5")
    assert pushed.returncode == 0, pushed.stderr
    # Two dead letters at Log: a route to a stop nobody knows (an envelope, with an id), and no JSON at all.
    lost = Envelope.stamp({"note": SCRIPT}, ["Log", "Nowhere"])
    lost.pop_next()
    produce(broker, "Log", [(b"lost", lost.to_bytes()), (b"junk", b"not json")])

    # What the topics hold: every record a stop's topic got is a message that stop received.
    source = read_topic(broker, "Source", PUSHED, settle=0)
    add_email = read_topic(broker, "AddEmail", PUSHED, settle=0)
    at_log = read_topic(broker, "Log", 1, settle=3)
    white_list = read_topic(broker, "WhiteList", 1, settle=0)
    errors = read_topic(broker, "Error", 2, settle=0)
    assert len(source) == len(add_email) == PUSHED
    pushed_to_log = [e for e in envelopes(at_log) if e["header"]["historical_route"][0] == "AddEmail"]
    paths = Counter(tuple(e["header"]["historical_route"]) for e in pushed_to_log)
    assert set(paths) == {("AddEmail", "Log"), ("AddEmail", "WhiteList", "Log")}, paths
    via_whitelist = paths[("AddEmail", "WhiteList", "Log")]
    expected = {
        "busdriver": {"received": PUSHED, "forwarded_to": {"AddEmail": PUSHED}, "delivered": 0},
        "AddEmail": {
            "received": len(add_email),
            "forwarded_to": {"WhiteList": len(white_list), "Log": paths[("AddEmail", "Log")]},
            "delivered": 0,
            "dropped": len(add_email) - len(white_list) - paths[("AddEmail", "Log")],
        },
        "WhiteList": {
            "received": len(white_list),
            "forwarded_to": {"Log": via_whitelist},
            "delivered": 0,
            "dropped": len(white_list) - via_whitelist,
        },
        "Log": {
            "received": len(at_log),
            "forwarded_to": {},
            "delivered": len(pushed_to_log),
            "dead_lettered_by_error": {"UnknownStop": 1, "InvalidEnvelope": 1},
        },
    }
    assert len(errors) == 2
    assert all(expected[stop]["dropped"] > 0 for stop in ("AddEmail", "WhiteList")), "the run must drop some"

    def cluster_done(stats: dict) -> bool:
        stops = stats["cluster"]["stops"]
        workers_seen = stats["cluster"]["workers"]
        return (
            stops.get("Log", {}).get("received") == len(at_log)
            and len(workers_seen) == 2
            and sum(w["received"] for w in workers_seen.values()) == sum(s["received"] for s in stops.values())
        )

    views = {name: w.wait_for("/metrobus/stats/", cluster_done, timeout=30) for name, w in (("a", a), ("b", b))}
    time.sleep(2.5)  # a snapshot round later nothing may have moved
    views = {name: w.get("/metrobus/stats/") for name, w in (("a", a), ("b", b))}

    for name, stats in views.items():
        cluster = stats["cluster"]
        for stop, want in expected.items():
            got = cluster["stops"][stop]
            for key, value in want.items():
                assert got[key] == value, (name, stop, key)
            assert got["received"] == got["forwarded"] + got["delivered"] + got["dropped"] + got["dead_lettered"]
            assert got["processing_ms"]["count"] == got["received"]
            assert 0 < got["processing_ms"]["p50"] <= got["processing_ms"]["p99"]
        assert cluster["stops"]["AddEmail"]["dropped_by_reason"] == {
            "no email for account": expected["AddEmail"]["dropped"]
        }
        assert cluster["stops"]["WhiteList"]["dropped_by_reason"] == {
            "email not whitelisted": expected["WhiteList"]["dropped"]
        }
        assert cluster["stops"]["busdriver"]["rate_per_s"] > 0
        assert cluster["bus"]["delivered"] == len(pushed_to_log)
        assert cluster["bus"]["e2e_ms"]["count"] == len(pushed_to_log)
        assert 0 < cluster["bus"]["e2e_ms"]["p50"] <= cluster["bus"]["e2e_ms"]["p99"] < 30_000
        letters = {letter["error"]: letter for letter in cluster["dead_letters"]}
        assert set(letters) == {"UnknownStop", "InvalidEnvelope"}
        assert letters["UnknownStop"]["id"] == lost.id
        assert SCRIPT in letters["UnknownStop"]["payload"]

        # Each worker's share: the local views of both add up to the cluster's, and the shares to 1.
        shares = cluster["workers"]
        assert {w["url"].rstrip("/") for w in shares.values()} == {url(a), url(b)}
        assert not any(w["stale"] for w in shares.values())
        assert all(w["received"] > 0 for w in shares.values()), shares
        assert sum(w["share"] for w in shares.values()) == pytest.approx(1, abs=1e-3)
        for stop in expected:
            local = [views[n]["stops"].get(stop, {}).get("received", 0) for n in ("a", "b")]
            assert sum(local) == cluster["stops"][stop]["received"], stop
            by_worker = {w["url"].rstrip("/"): w["stops"].get(stop, {}).get("received", 0) for w in shares.values()}
            assert by_worker == {url(a): local[0], url(b): local[1]}, stop

    # Where did each message end? Either worker answers for any message.
    log_ids = {e["header"]["id"] for e in pushed_to_log}
    dropped_at_add_email = sorted(ids(add_email) - ids(white_list) - log_ids)
    delivered_id = sorted(log_ids)[0]
    for worker in (a, b):
        fate = wait_for_fate(worker, delivered_id, "delivered")
        assert fate["stop"] == "Log"
        assert fate["where"] == "delivered: its route ended at Log"
        assert [hop["stop"] for hop in fate["hops"]][0:2] == ["busdriver", "AddEmail"]
        assert fate["hops"][-1]["stop"] == "Log"
        times = [t for hop in fate["hops"] for t in (hop["received"], hop.get("forwarded", hop.get("ended")))]
        assert times == sorted(times)
        fate = wait_for_fate(worker, dropped_at_add_email[0], "dropped")
        assert (fate["stop"], fate["detail"]) == ("AddEmail", "no email for account")
        assert [hop["stop"] for hop in fate["hops"]] == ["busdriver", "AddEmail"]
        fate = wait_for_fate(worker, lost.id, "dead_lettered")
        assert (fate["stop"], fate["detail"]) == ("Log", "UnknownStop")
        assert "'Nowhere'" in fate["message"]
        code, fate = message(worker, "no-such-message")
        assert code == 404 and fate["found"] is False

    # Prometheus: each worker's own numbers, per stop.
    for name, worker in (("a", a), ("b", b)):
        with urllib.request.urlopen(f"{url(worker)}/metrobus/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        local = worker.get("/metrobus/stats/")["stops"]
        for stop, counts in local.items():
            assert samples[("metrobus_received_total", (("stop", stop),))] == counts["received"]
            assert samples[("metrobus_processing_seconds_count", (("stop", stop),))] == counts["received"]
            for reason, n in counts["dropped_by_reason"].items():
                assert samples[("metrobus_dropped_total", (("reason", reason), ("stop", stop)))] == n
        assert any(key[0] == "metrobus_e2e_latency_seconds_bucket" for key in samples), name
