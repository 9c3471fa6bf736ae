"""Scale out: two workers of one consumer group split the stop topics' partitions and the work."""

from __future__ import annotations

import time

import pytest

from .conftest import Worker, bus_env, run_cli

pytestmark = pytest.mark.integration

PARTITIONS, ACCOUNTS, PUSHED = 8, 500, 400


def assignment(worker: Worker) -> dict[str, dict[str, list[int]]]:
    """The group's assignment as this worker knows it: canonical URL -> topic -> partitions (Faust's router view)."""
    return worker.get("/router/topics")


def url(worker: Worker) -> str:
    return f"http://127.0.0.1:{worker.port}"


def wait_until_the_group_is_shared(workers: list[Worker], timeout: float = 45) -> dict[str, list[int]]:
    """Poll until every worker sees the same assignment, in which each one holds AddEmail partitions."""
    deadline = time.monotonic() + timeout
    while True:
        seen = [assignment(worker) for worker in workers]
        shares = {host: topics.get("AddEmail", []) for host, topics in seen[0].items()}
        if all(view == seen[0] for view in seen) and set(shares) == {url(w) for w in workers} and all(shares.values()):
            return shares
        assert time.monotonic() < deadline, f"the group never shared AddEmail between the workers; last views: {seen}"
        time.sleep(0.3)


def received(worker: Worker, stop: str) -> int:
    return worker.get("/metrobus/stats/")["stops"].get(stop, {}).get("received", 0)


def test_two_workers_share_the_partitions_and_the_work(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli", METROBUS_PARTITIONS=str(PARTITIONS))
    data = tmp_path / "data"
    made = run_cli(env, "make-data", "--out", str(data), "--accounts", str(ACCOUNTS), "--seed", "3")
    assert made.returncode == 0, made.stderr
    warmed = run_cli(env, "warm", "--emails", str(data / "emails.dat"), "--whitelist", str(data / "whitelist.dat"))
    assert warmed.returncode == 0, warmed.stderr

    a = workers("a", METROBUS_PARTITIONS=str(PARTITIONS))
    b = workers("b", METROBUS_PARTITIONS=str(PARTITIONS))
    for worker in (a, b):
        worker.wait_ready()

    # One group, two members: AddEmail's 8 partitions are split between them, none twice.
    shares = wait_until_the_group_is_shared([a, b])
    assert sorted(shares[url(a)] + shares[url(b)]) == list(range(PARTITIONS))
    # Every worker holds every cache whole, whatever partitions it got.
    for worker in (a, b):
        worker.wait_caches({"emails": 400, "whitelist": 200})

    pushed = run_cli(env, "push", "--count", str(PUSHED), "--accounts", str(ACCOUNTS), "--seed", "5")
    assert pushed.returncode == 0, pushed.stderr

    deadline = time.monotonic() + 30
    while (total := received(a, "AddEmail") + received(b, "AddEmail")) < PUSHED:
        assert time.monotonic() < deadline, f"only {total} of {PUSHED} reached AddEmail"
        time.sleep(0.3)
    time.sleep(1.5)  # anything counted twice (a rebalance mid-run) would show up by now

    counts = {name: (received(w, "busdriver"), received(w, "AddEmail")) for name, w in (("a", a), ("b", b))}
    assert all(busdriver > 0 and add_email > 0 for busdriver, add_email in counts.values()), (
        f"one worker did all the work: {counts}"
    )
    assert sum(add_email for _, add_email in counts.values()) == PUSHED, counts
    assert sum(busdriver for busdriver, _ in counts.values()) == PUSHED, counts
    # The assignment did not move while they worked.
    assert wait_until_the_group_is_shared([a, b], timeout=0) == shares
