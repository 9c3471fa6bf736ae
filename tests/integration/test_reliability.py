"""Nothing lost: kill -9 in the middle, a worker leaving and coming back, a broker that stops
answering for a while, dead letters replayed after a fix, loops cut by the hop limit.

Every check ends with ``faust -A metrobus_app reconcile``, which matches the source topic with
the fates topic: pushed = delivered + dropped + dead-lettered, duplicates counted apart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from metrobus_app import Envelope
from metrobus_app.brokers import free_port

from .conftest import FAUST, ROOT, Worker, bus_env, new_broker, produce, read_topic, run_cli

pytestmark = pytest.mark.integration

ACCOUNTS = 2000
FIGURES = Path(os.environ.get("METROBUS_TEST_FIGURES", ROOT / ".metrobus" / "reliability-figures.json"))


def note(name: str, figures: dict) -> None:
    """Keep what a test measured (the README quotes these), and show it with ``pytest -s``."""
    print(f"\n{name}: {json.dumps(figures)}")
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    known[name] = figures
    FIGURES.write_text(json.dumps(known, indent=1, sort_keys=True))


def warm_demo_caches(env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = run_cli(env, "make-data", "--out", str(data), "--accounts", str(ACCOUNTS), "--seed", "3")
    assert made.returncode == 0, made.stderr
    warmed = run_cli(env, "warm", "--emails", str(data / "emails.dat"), "--whitelist", str(data / "whitelist.dat"))
    assert warmed.returncode == 0, warmed.stderr


def start_push(env: dict[str, str], count: int, rate: float = 0, seed: int = 11) -> subprocess.Popen:
    args = ["push", "--count", str(count), "--accounts", str(ACCOUNTS), "--seed", str(seed), "--rate", str(rate)]
    return subprocess.Popen([*FAUST, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def reconcile(env: dict[str, str], wait: float = 120) -> dict:
    done = run_cli(env, "reconcile", "--wait", str(wait), "--json", timeout=wait + 120)
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def received(worker, stop: str) -> int:
    try:
        return worker.get("/metrobus/stats/")["stops"].get(stop, {}).get("received", 0)
    except OSError:
        return 0


def wait_until(check, timeout: float, what: str, state=None) -> None:
    """Wait for ``check()``; on a timeout say what ``state()`` (if given) tells of the run then."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"; {state()}" if state else ""))
        time.sleep(0.2)


def delivered_ids(broker, expect: int) -> list[str]:
    return [json.loads(value)["header"]["id"] for _, value in read_topic(broker, "Log", expect, settle=1)]


@pytest.mark.guarantee
def test_kill_9_in_the_middle_of_20000_records_loses_nothing(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    warm_demo_caches(env, tmp_path)
    worker = workers("crashing").wait_ready()
    worker.wait_caches({"emails": 1600, "whitelist": 800})

    pusher = start_push(env, 20_000)
    wait_until(lambda: received(worker, "busdriver") >= 6000, 120, "the busdriver to take 6000 records")
    at_kill = {stop: received(worker, stop) for stop in ("busdriver", "AddEmail", "WhiteList", "Log")}
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    worker.log.close()
    assert at_kill["busdriver"] < 20_000, "the worker was not killed in the middle"

    worker.start().wait_ready()
    assert pusher.wait(timeout=180) == 0, pusher.stderr.read() if pusher.stderr else ""
    result = reconcile(env, wait=180)

    assert result["pushed"] == 20_000
    assert result["unaccounted"] == 0, (result["unaccounted_ids"][:10], worker.log_text()[-3000:])
    assert result["delivered"] + result["dropped"] + result["dead_lettered"] == 20_000
    assert result["dead_lettered"] == 0
    # Duplicates only of what was in flight: taken after the last commit before the kill.
    assert result["duplicates"] <= sum(at_kill.values())
    # The sink's topic agrees: every delivered message is there, a duplicate at most twice.
    ids = delivered_ids(broker, result["delivered"])
    assert len(set(ids)) == result["delivered"]
    note(
        "kill_9",
        {
            "pushed": 20_000,
            "processed_before_kill": at_kill,
            "delivered": result["delivered"],
            "dropped": result["dropped"],
            "unaccounted": result["unaccounted"],
            "duplicate_messages": result["duplicates"],
            "duplicate_fates": result["duplicate_fates"],
            "duplicate_deliveries_on_Log": len(ids) - len(set(ids)),
        },
    )


def test_a_worker_that_leaves_and_comes_back_loses_nothing(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    warm_demo_caches(env, tmp_path)
    first = workers("first").wait_ready()
    second = workers("second").wait_ready()
    for worker in (first, second):
        worker.wait_caches({"emails": 1600, "whitelist": 800})

    pusher = start_push(env, 6000, rate=400)
    wait_until(lambda: received(second, "busdriver") >= 300, 60, "the second worker to take a share")
    second.stop()  # SIGTERM: it commits, leaves the group, the first takes its partitions
    wait_until(lambda: received(first, "Log") >= 1000, 60, "the first worker to go on alone")
    second.start().wait_ready()
    assert pusher.wait(timeout=120) == 0
    result = reconcile(env, wait=120)

    assert result["pushed"] == 6000
    assert result["unaccounted"] == 0, result["unaccounted_ids"][:10]
    assert result["accounted"] == 6000
    second_share = received(second, "busdriver")
    note(
        "rebalance",
        {
            "pushed": 6000,
            "duplicate_messages": result["duplicates"],
            "second_worker_after_return_busdriver": second_share,
        },
    )


@pytest.mark.guarantee
def test_a_rolling_restart_of_every_worker_under_load_loses_nothing(broker, workers, tmp_path):
    """Each worker in turn is stopped (SIGTERM, as a deploy does) and started again while records flow."""
    env = bus_env(broker.url, tmp_path / "cli")
    warm_demo_caches(env, tmp_path)
    running = [workers(name).wait_ready() for name in ("one", "two")]
    for worker in running:
        worker.wait_caches({"emails": 1600, "whitelist": 800})

    pusher = start_push(env, 9000, rate=300)
    wait_until(lambda: sum(received(w, "Log") for w in running) >= 300, 60, "the bus to deliver")
    for worker in running:
        assert worker.stop(), "a worker did not stop within 20 s of SIGTERM"
        worker.start().wait_ready()
        worker.wait_caches({"emails": 1600, "whitelist": 800})
        wait_until(lambda w=worker: received(w, "busdriver") > 0, 60, "the restarted worker to take a share")
    assert pusher.poll() is None, "the load ended before the last restart: the test proves less than it says"
    assert pusher.wait(timeout=120) == 0
    result = reconcile(env, wait=120)

    assert result["pushed"] == 9000
    assert result["unaccounted"] == 0, result["unaccounted_ids"][:10]
    assert result["accounted"] == 9000
    note("rolling_restart", {"pushed": 9000, "workers": 2, "duplicate_messages": result["duplicates"]})


@pytest.mark.tansu
def test_a_broker_that_stops_answering_for_10_s_loses_nothing(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    worker = workers().wait_ready()  # no caches: AddEmail drops every record, a fate all the same
    pusher = start_push(env, 4000, rate=250)
    wait_until(lambda: received(worker, "busdriver") >= 500, 60, "the bus to run")
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        time.sleep(10)
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    assert pusher.wait(timeout=120) == 0, pusher.stderr.read() if pusher.stderr else ""
    result = reconcile(env, wait=120)
    assert result["pushed"] == 4000
    assert result["unaccounted"] == 0, result["unaccounted_ids"][:10]
    assert result["dropped"] == 4000
    assert worker.process.poll() is None, "the worker gave up"
    log = worker.log_text()
    assert "does not answer" in log and "answers again after" in log, "the worker did not say what happened"
    note("broker_paused_10s", {"pushed": 4000, "duplicate_messages": result["duplicates"]})


def test_a_worker_started_before_its_broker_waits_for_it(tmp_path, workers_without_broker):
    port = free_port()
    worker = workers_without_broker(f"kafka://127.0.0.1:{port}")
    wait_until(lambda: "does not answer" in worker.log_text(), 30, "the worker to say it waits")
    assert worker.process.poll() is None
    with new_broker(port=port, log_path=tmp_path / "late-broker.log") as broker:
        worker.wait_ready(timeout=90)
        assert "answers after" in worker.log_text()
        produce(broker, "Log", [(b"k", arriving({"x": 1}, ["Log"]))])
        worker.wait_for("/metrobus/stats/", lambda s: s["stops"].get("Log", {}).get("delivered") == 1)
        worker.stop()


@pytest.fixture()
def workers_without_broker(tmp_path):
    started: list[Worker] = []

    def start(url: str) -> Worker:
        worker = Worker(bus_env(url, tmp_path / "late-data"), tmp_path / "late.log", free_port()).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def arriving(payload: dict, route: list[str], **header) -> bytes:
    envelope = Envelope.stamp(payload, route, **header)
    envelope.pop_next()
    return envelope.to_bytes()


def test_dead_letters_of_a_broken_stop_are_replayed_to_delivery_after_the_fix(broker, workers, tmp_path):
    switch = tmp_path / "flaky-broken"
    switch.write_text("database is down")
    extra = {"METROBUS_MODULES": "agents,tests.integration.flaky_stops", "METROBUS_TEST_FLAKY_FILE": str(switch)}
    env = bus_env(broker.url, tmp_path / "cli", METROBUS_MAX_REPLAYS="2", **extra)
    workers(**extra).wait_ready()

    produce(broker, "Flaky", [(f"k{i}".encode(), arriving({"x": i}, ["Flaky", "Log"])) for i in range(20)])
    letters = [json.loads(value) for _, value in read_topic(broker, "Error", 20, settle=1)]
    assert len(letters) == 20
    assert {(letter["stop"], letter["error"], letter["topic"], letter["replayable"]) for letter in letters} == {
        ("Flaky", "RuntimeError", "Flaky", True)
    }
    listed = run_cli(env, "deadletters", "list")
    assert listed.returncode == 0, listed.stderr
    assert "Flaky" in listed.stdout and "RuntimeError" in listed.stdout and " 20 " in listed.stdout

    switch.unlink()  # the fix
    replayed = run_cli(env, "deadletters", "replay", "--stop", "Flaky")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 20 messages to Flaky" in replayed.stdout
    arrived = [json.loads(value) for _, value in read_topic(broker, "Log", 20, settle=1)]
    assert sorted(envelope["payload"]["x"] for envelope in arrived) == list(range(20))
    for envelope in arrived:
        assert envelope["payload"]["flaky_ok"] is True
        assert envelope["header"]["replays"] == 1
        assert envelope["header"]["historical_route"] == ["Flaky", "Log"]
    assert {e["header"]["id"] for e in arrived} == {letter["id"] for letter in letters}
    assert run_cli(env, "deadletters", "list").stdout.strip() == "no dead letters"
    again = run_cli(env, "deadletters", "replay")
    assert "replayed 0 messages" in again.stdout  # nothing is replayed twice

    # A message that keeps failing goes back to the dead-letter topic each time, and replay stops at the cap.
    switch.write_text("broken again")
    produce(broker, "Flaky", [(b"stubborn", arriving({"x": 99}, ["Flaky", "Log"]))])
    for attempt in range(2):
        read_topic(broker, "Error", 21 + attempt, settle=1)
        assert "replayed 1 messages" in run_cli(env, "deadletters", "replay", "--stop", "Flaky").stdout
    letters = [json.loads(value) for key, value in read_topic(broker, "Error", 23, settle=1) if key == b"stubborn"]
    assert [letter["replays"] for letter in letters] == [0, 1, 2]
    refused = run_cli(env, "deadletters", "replay", "--stop", "Flaky")
    assert "already replayed METROBUS_MAX_REPLAYS=2 times" in refused.stdout
    assert "replayed 0 messages" in refused.stdout


def test_a_loop_is_cut_by_the_hop_limit_and_a_route_too_long_is_refused(broker, workers):
    workers(METROBUS_MAX_HOPS="16", METROBUS_MAX_ROUTE_STOPS="100").wait_ready()
    produce(
        broker,
        "Log",
        [
            (b"loop", arriving({"x": 1}, ["Log"] * 50)),  # Log -> Log -> ... : 16 hops, then cut
            (b"short", arriving({"x": 2}, ["Log"] * 6, max_hops=3)),  # the busdriver's limit for this route
            (b"long", arriving({"x": 3}, ["Log"] * 5000)),
            (b"fine", arriving({"x": 4}, ["Log"] * 3)),
        ],
    )
    letters = {key: json.loads(value) for key, value in read_topic(broker, "Error", 3, settle=2)}
    assert set(letters) == {b"loop", b"short", b"long"}
    assert letters[b"loop"]["error"] == "HopLimitExceeded"
    assert letters[b"loop"]["message"] == "the message was sent to 16 stops; its limit is 16 (METROBUS_MAX_HOPS)"
    assert letters[b"short"]["message"] == "the message was sent to 3 stops; its limit is 3 (header.max_hops)"
    assert letters[b"long"]["error"] == "InvalidEnvelope"
    assert letters[b"long"]["message"] == "header.route has 4999 stops, above METROBUS_MAX_ROUTE_STOPS=100"
    fine = [json.loads(v) for k, v in read_topic(broker, "Log", 23, settle=1) if k == b"fine"]
    assert fine[-1]["header"]["route"] == []
