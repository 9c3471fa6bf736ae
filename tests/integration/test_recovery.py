"""Recovery on real workers and the real broker: retries in place and through a delay topic,
compensation of the stops done (newest first, each on its own topic), a failing compensation,
deadlines, and kill -9 while messages wait to retry. Counted from the topics themselves.

The stops are test-only (``recovery_stops.py``). A message gets its route either as an
envelope put straight on its first stop's topic, or from the busdriver's stored rules
(``routes default ...``) for records pushed to the source topic, which ``reconcile`` accounts for.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from metrobus_app import Envelope

from .conftest import FAUST, ROOT, Worker, bus_env, produce, read_topic, run_cli
from .test_exactly_once import committed_ids

pytestmark = pytest.mark.integration

DELAY_TOPIC = "metrobus-retry-2s"  # a 1.5 s wait goes to the shortest tier at least as long
LATER_WAIT_S = 1.5  # recovery_stops.LATER_WAIT_S unless METROBUS_TEST_LATER_WAIT_S says otherwise
SHOP = ["Reserve", "Charge", "Ship", "Done"]


def arriving(payload: dict, route: list[str], **header) -> bytes:
    """An envelope as the busdriver sends it to the route's first stop."""
    envelope = Envelope.stamp(payload, route, **header)
    envelope.pop_next()
    return envelope.to_bytes()


def envelopes(broker, topic: str, expect: int, **options) -> list[dict]:
    return [json.loads(value) for _, value in read_topic(broker, topic, expect, **options)]


def stats(worker: Worker, check, timeout: float = 60) -> dict:
    return worker.wait_for("/metrobus/stats/", check, timeout)


def failed_hops(envelope: dict) -> list[tuple[str, int, str]]:
    return [(hop["stop"], hop["attempt"], hop["error"]) for hop in envelope["header"]["hops"] if "attempt" in hop]


def undone_lines(records: Path) -> list[dict]:
    log = records / "undone.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def figures(values: list[float]) -> dict[str, float]:
    """Milliseconds: mean, p50, p95, max."""
    ms = sorted(v * 1000 for v in values)
    return {
        "n": len(ms),
        "mean_ms": round(statistics.fmean(ms), 1),
        "p50_ms": round(ms[len(ms) // 2], 1),
        "p95_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.95))], 1),
        "max_ms": round(ms[-1], 1),
    }


def test_a_stop_failing_the_first_two_attempts_delivers_every_message_after_three(broker, workers, extra):
    count = 50
    worker = workers(**extra).wait_ready()
    produce(broker, "Twice", [(f"k{n}".encode(), arriving({"n": n}, ["Twice", "Done"])) for n in range(count)])

    arrived = envelopes(broker, "Done", count)
    assert sorted(e["payload"]["n"] for e in arrived) == list(range(count))  # every one, once
    gaps = []
    for envelope in arrived:
        assert envelope["payload"]["twice_tries"] == 3
        assert failed_hops(envelope) == [("Twice", 1, "TimeoutError"), ("Twice", 2, "TimeoutError")]
        hops = envelope["header"]["hops"]
        assert [hop["stop"] for hop in hops] == ["Twice", "Twice", "Twice"]  # two failed attempts, then on
        assert "attempts" not in envelope["header"]  # the count is per stop: Done starts at none
        gaps += [hops[1]["received"] - hops[0]["failed"] - 0.01, hops[2]["received"] - hops[1]["failed"] - 0.01]

    seen = stats(worker, lambda s: s["stops"].get("Done", {}).get("delivered") == count)
    twice = seen["stops"]["Twice"]
    assert twice["retried"] == 2 * count
    assert twice["retried_by_where"] == {"in place": 2 * count}
    assert twice["received"] == 3 * count  # every attempt is an outcome of the stop
    assert twice["forwarded_to"] == {"Done": count}
    assert twice["dead_lettered"] == 0 and twice["compensating"] == 0
    assert seen["bus"]["retried"] == 2 * count and seen["bus"]["waiting_to_retry"] == 0
    assert read_topic(broker, "Error", 0, timeout=0, settle=1) == []
    print(f"\nin-place retry (10 ms wait), extra time from failure to the next attempt: {figures(gaps)}")


def test_a_long_wait_goes_through_the_delay_topic_and_later_messages_overtake_it(broker, workers, extra):
    worker = workers(**extra).wait_ready()
    key = b"one-key"  # one partition: without the delay topic the order would be kept
    produce(broker, "Later", [(key, arriving({"n": n, "fail_once": n == 0}, ["Later", "Done"])) for n in range(10)])

    arrived = envelopes(broker, "Done", 10)
    order = [e["payload"]["n"] for e in arrived]
    assert sorted(order) == list(range(10))
    assert order[-1] == 0, f"the message that failed once should arrive last, after the 9 pushed after it: {order}"
    assert order[:-1] == list(range(1, 10))  # the others kept their order
    late = arrived[-1]
    assert failed_hops(late) == [("Later", 1, "ConnectionError")]
    failed, retried = late["header"]["hops"]
    assert retried["stop"] == "Later" and retried["received"] - failed["failed"] >= LATER_WAIT_S - 0.005
    assert all(not failed_hops(e) for e in arrived[:-1])

    [waiting] = envelopes(broker, DELAY_TOPIC, 1)  # it waited in the 2 s tier's topic
    assert waiting["payload"]["n"] == 0
    assert waiting["header"]["attempts"] == 1
    retry = waiting["header"]["retry"]
    assert (retry["stop"], retry["attempt"], retry["of"]) == ("Later", 2, 3)
    assert abs(retry["due"] - (failed["failed"] + LATER_WAIT_S)) < 0.5
    assert [k for k, _ in read_topic(broker, DELAY_TOPIC, 1, settle=0)] == [key]  # the key kept

    seen = stats(worker, lambda s: s["stops"].get("Done", {}).get("delivered") == 10)
    assert seen["stops"]["Later"]["retried_by_where"] == {DELAY_TOPIC: 1}
    assert seen["stops"][DELAY_TOPIC]["forwarded_to"] == {"Later": 1}
    assert seen["bus"]["waiting_to_retry"] == 0


def test_an_exactly_once_worker_retries_through_the_delay_topic_and_delivers_each_message_once(broker, workers, extra):
    """In Faust's transactional mode the wait in the delay topic and the way back are in transactions too."""
    count = 40
    worker = workers(**extra, METROBUS_PROCESSING_GUARANTEE="exactly_once").wait_ready()
    sent = [(f"k{n}".encode(), arriving({"n": n, "fail_once": n % 2 == 0}, ["Later", "Done"])) for n in range(count)]
    produce(broker, "Later", sent)

    seen = stats(worker, lambda s: s["stops"].get("Done", {}).get("delivered") == count, 90)
    assert seen["stops"]["Later"]["retried_by_where"] == {DELAY_TOPIC: count // 2}
    assert seen["stops"][DELAY_TOPIC]["forwarded_to"] == {"Later": count // 2}
    done, waited = committed_ids(broker, "Done"), committed_ids(broker, DELAY_TOPIC)
    assert len(done) == count and set(done.values()) == {1}, done
    assert len(waited) == count // 2 and set(waited.values()) == {1}, waited
    assert "transactional" in worker.log_text()


def test_a_fatal_error_at_the_third_stop_undoes_the_second_then_the_first_and_dead_letters_the_story(
    broker, workers, extra, records
):
    count = 5
    worker = workers(**extra).wait_ready()
    sent = {n: arriving({"n": n, "ship": "fault"}, SHOP) for n in range(count)}
    produce(broker, "Reserve", [(f"o{n}".encode(), value) for n, value in sent.items()])

    letters = [json.loads(v) for _, v in read_topic(broker, "Error", count)]
    assert len(letters) == count
    for letter in letters:
        assert (letter["stop"], letter["error"], letter["message"]) == ("Ship", "Fault", "no carrier for this address")
        assert letter["compensated"] == ["Charge", "Reserve"]  # newest first
        assert letter["topic"] == "Ship" and letter["replayable"] is True
        value = json.loads(letter["value"])  # as it failed at Ship: the undo stack kept for a replay
        assert [entry["stop"] for entry in value["header"]["compensate"]] == ["Reserve", "Charge"]
        assert value["header"]["compensate"][0]["log"] == {"hold": f"hold-{value['payload']['n']}"}
        assert "compensating" not in value["header"]

    # The compensations ran on each stop's own topic: Charge's first, then Reserve's.
    on_charge = [e for e in envelopes(broker, "Charge", 2 * count) if "compensating" in e["header"]]
    on_reserve = [e for e in envelopes(broker, "Reserve", 2 * count) if "compensating" in e["header"]]
    assert len(on_charge) == len(on_reserve) == count
    for envelope in on_charge:
        assert envelope["header"]["compensating"]["stop"] == "Ship"
        assert envelope["header"]["compensating"]["undone"] == []
        assert envelope["header"]["compensate"][-1]["stop"] == "Charge"
    for envelope in on_reserve:
        assert envelope["header"]["compensating"]["undone"] == ["Charge"]
        assert [entry["stop"] for entry in envelope["header"]["compensate"]] == ["Reserve"]
    lines = undone_lines(records)
    for n in range(count):
        mine = [line for line in lines if line["n"] == str(n)]
        assert [line["undo"] for line in mine] == ["Charge", "Reserve"]
        assert mine[0]["time"] <= mine[1]["time"]
        assert [line["log"] for line in mine] == [None, {"hold": f"hold-{n}"}]
    assert read_topic(broker, "Done", 0, timeout=0, settle=1) == []

    seen = stats(worker, lambda s: s["bus"]["compensated"] == count)
    assert seen["stops"]["Ship"]["compensating_by_error"] == {"Fault": count}
    assert seen["stops"]["Ship"]["dead_lettered"] == 0
    assert seen["bus"]["compensation_failed"] == 0 and seen["bus"]["expired"] == 0
    message_id = Envelope.from_bytes(sent[0]).id
    fate = worker.wait_for(f"/metrobus/messages/{message_id}", lambda f: f.get("status") == "compensated", 10)
    assert fate["failed_at"] == "Ship" and fate["undone"] == ["Charge", "Reserve"], fate
    assert "compensated after Ship failed" in fate["where"], fate["where"]


def test_a_failing_compensation_ends_as_compensation_failed_with_the_stops_not_undone(broker, workers, extra, records):
    count = 3
    worker = workers(**extra).wait_ready()
    produce(
        broker,
        "Reserve",
        [(f"r{n}".encode(), arriving({"n": n, "ship": "fault", "refund_fails": True}, SHOP)) for n in range(count)],
    )
    letters = [json.loads(v) for _, v in read_topic(broker, "Error", count)]
    assert len(letters) == count
    for letter in letters:
        assert letter["error"] == "CompensationFailed"
        assert letter["stop"] == "Ship"  # where the message failed; the compensation failed at Charge
        assert letter["not_undone"] == ["Charge", "Reserve"]
        assert letter["compensated"] == []
        assert letter["first_error"] == "Fault"
        assert "the payment service refuses the refund" in letter["message"]
    assert undone_lines(records) == []  # Reserve was not undone either: its undo never ran
    seen = stats(worker, lambda s: s["bus"]["compensation_failed"] == count)
    assert seen["stops"]["Charge"]["compensation_failed"] == count
    assert seen["bus"]["compensated"] == 0


def test_a_message_past_its_deadline_is_not_run_it_is_compensated_and_counted_as_expired(
    broker, workers, extra, records
):
    worker = workers(**extra).wait_ready()
    on_time = Envelope.stamp({"n": 0}, SHOP, deadline_s=60)
    slow = Envelope.stamp({"n": 1, "slow_s": 2.5}, SHOP, deadline_s=1.5)  # Reserve takes 2.5 s: late at Charge
    late = Envelope.stamp({"n": 2}, SHOP, deadline_s=-1)  # late at the first stop: nothing to undo
    for envelope in (on_time, slow, late):
        envelope.pop_next()
    produce(broker, "Reserve", [(b"d", e.to_bytes()) for e in (on_time, slow, late)])

    [delivered] = envelopes(broker, "Done", 1)
    assert delivered["payload"]["n"] == 0
    letters = {json.loads(letter["value"])["payload"]["n"]: letter for letter in map(json.loads, _values(broker, 2))}
    assert set(letters) == {1, 2}
    assert (letters[1]["stop"], letters[1]["error"]) == ("Charge", "DeadlinePassed")
    assert letters[1]["compensated"] == ["Reserve"]
    assert "after its deadline" in letters[1]["message"]
    assert (letters[2]["stop"], letters[2]["error"]) == ("Reserve", "DeadlinePassed")
    assert "compensated" not in letters[2]
    assert [(line["undo"], line["n"]) for line in undone_lines(records)] == [("Reserve", "1")]
    charged = [e for e in envelopes(broker, "Charge", 2) if "compensating" not in e["header"]]
    assert sorted(e["payload"]["n"] for e in charged) == [0, 1]  # n=1 reached Charge, n=2 never did

    seen = stats(worker, lambda s: s["bus"]["expired"] == 2)
    assert seen["stops"]["Charge"]["compensating_by_error"] == {"DeadlinePassed": 1}
    assert seen["stops"]["Charge"]["forwarded_to"] == {"Ship": 1}  # Charge ran only the message on time
    assert seen["bus"]["compensated"] == 0
    fate = worker.wait_for(f"/metrobus/messages/{slow.id}", lambda f: f.get("status") == "expired", 10)
    assert fate["undone"] == ["Reserve"], fate
    print(f"\nexpired: {fate['where']}")


def _values(broker, expect: int) -> list[bytes]:
    return [value for _, value in read_topic(broker, "Error", expect)]


@pytest.mark.guarantee
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kill_9_while_messages_wait_in_a_delay_topic_loses_none(broker, workers, extra, records, tmp_path, guarantee):
    """Exactly once on Kafka, a read_committed reader of Done sees every message once."""
    pushed, wait_s = 400, 3.0
    extra = {
        **extra,
        "METROBUS_TEST_FAIL_ONCE": "all",
        "METROBUS_TEST_LATER_WAIT_S": str(wait_s),
        "METROBUS_PROCESSING_GUARANTEE": guarantee,
    }
    env = bus_env(broker.url, tmp_path / "cli", **extra)
    worker = workers("crashing", **extra).wait_ready()
    rules = tmp_path / "later.toml"
    rules.write_text('default = ["Later", "Done"]\n')  # every record, whatever its kind
    routed = run_cli(env, "routes", "load", str(rules))
    assert routed.returncode == 0, routed.stderr
    worker.wait_for("/metrobus/routes/", lambda view: view.get("revision") == 1, 10)

    rate = 100 if guarantee == "at_least_once" else 50  # (transactions: the stops' view of the topics lags)
    args = ["push", "--count", str(pushed), "--seed", "5", "--rate", str(rate)]
    pusher = subprocess.Popen([*FAUST, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def delivered() -> int:
        return worker.get("/metrobus/stats/")["stops"].get("Done", {}).get("delivered", 0)

    if guarantee == "at_least_once":
        # Killed once the first retries are through (offsets were committed since), while most wait.
        wait_until(lambda: delivered() >= 50, 90, "the first 50 messages to be delivered after their retry")
    else:
        # A stop sees the records of a transaction once it commits (every 2.8 s): the first deliveries
        # come in a bulk after the wait, so the kill comes once 150 failed and wait in the delay topic.
        wait_until(lambda: len(list(records.glob("later-*.failed"))) >= 150, 90, "150 messages to fail once")
    before = worker.get("/metrobus/stats/")
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    worker.log.close()
    failed_once = len(list(records.glob("later-*.failed")))
    delivered_before = len(envelopes(broker, "Done", 0, timeout=0, settle=0.5))
    at_kill = {
        "taken_by_busdriver": before["stops"]["busdriver"]["received"],
        "failed_once_at_Later": failed_once,
        "waiting_to_retry_by_stats": before["bus"]["waiting_to_retry"],
        "on_Done_topic": delivered_before,
        "waiting_or_on_their_way_back": failed_once - delivered_before,
    }
    assert at_kill["waiting_or_on_their_way_back"] >= 100, f"too few were waiting to retry: {at_kill}"
    assert at_kill["taken_by_busdriver"] < pushed, "the worker was killed after the last record"

    worker.start().wait_ready()
    assert pusher.wait(timeout=180) == 0, pusher.stderr.read() if pusher.stderr else ""
    done = run_cli(env, "reconcile", "--wait", "180", "--json", timeout=300)
    assert done.stdout, done.stderr
    result = json.loads(done.stdout)

    assert result["pushed"] == pushed
    assert result["unaccounted"] == 0, (result["unaccounted_ids"][:10], worker.log_text()[-3000:])
    assert result["delivered"] == pushed, result
    assert result["dead_lettered"] == result["compensated"] == result["expired"] == 0
    assert len(list(records.glob("later-*.failed"))) == pushed  # every message went through the delay topic
    arrived = envelopes(broker, "Done", pushed, settle=2)
    ids = [e["header"]["id"] for e in arrived]
    assert len(set(ids)) == pushed
    # At least once: only what was taken since the last commit before the kill runs again.
    assert result["duplicates"] <= at_kill["taken_by_busdriver"], result
    committed_twice = None
    if guarantee == "exactly_once" and broker.kind == "kafka":
        # A record's send back from the delay topic is committed with the delay topic's offset
        # (runtime/transactions.py): a read_committed reader of Done sees each message once.
        once = committed_ids(broker, "Done")
        assert len(once) == pushed, Counter(once.values())
        committed_twice = sum(1 for n in once.values() if n > 1)
        assert committed_twice == 0, Counter(once.values())
    report = {
        "guarantee": guarantee,
        "broker": broker.kind,
        "pushed": pushed,
        "at_kill": at_kill,
        "delivered": result["delivered"],
        "unaccounted": result["unaccounted"],
        "duplicate_messages": result["duplicates"],
        "duplicate_fates": result["duplicate_fates"],
        "duplicate_deliveries_on_Done": len(ids) - len(set(ids)),
        "read_committed_twice_on_Done": committed_twice,
    }
    print(f"\nkill -9 with messages waiting to retry: {json.dumps(report)}")


def test_what_a_retry_through_a_delay_topic_costs(broker, workers, extra):
    count = 100
    worker = workers(**extra).wait_ready()
    produce(
        broker,
        "Later",
        [(f"m{n}".encode(), arriving({"n": n, "fail_once": True}, ["Later", "Done"])) for n in range(count)],
    )
    arrived = envelopes(broker, "Done", count)
    assert sorted(e["payload"]["n"] for e in arrived) == list(range(count))
    extra_s, first_try = [], []
    for envelope in arrived:
        failed, retried = envelope["header"]["hops"]
        assert failed["attempt"] == 1 and retried["stop"] == "Later"
        extra_s.append(retried["received"] - failed["failed"] - LATER_WAIT_S)
        first_try.append(failed["received"] - envelope["header"]["stamped_at"])
    assert min(extra_s) > -0.005, "a retry came back before it was due"
    assert max(extra_s) < 15, "a retry came back far too late (sanity bound, not a benchmark)"
    seen = stats(worker, lambda s: s["stops"].get("Done", {}).get("delivered") == count)
    assert seen["stops"]["Later"]["retried_by_where"] == {DELAY_TOPIC: count}
    print(
        f"\nretry through {DELAY_TOPIC} (wait {LATER_WAIT_S} s), extra time from failure to the next attempt: "
        f"{figures(extra_s)}; for comparison, put on the topic to the first attempt: {figures(first_try)}"
    )


def test_reconcile_accounts_for_the_messages_that_end_in_recovery(broker, workers, extra, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli", **extra)
    worker = workers(**extra).wait_ready()
    rules = tmp_path / "shop.toml"
    rules.write_text('default = ["Reserve", "Charge", "Ship", "Done"]\n')
    assert run_cli(env, "routes", "load", str(rules)).returncode == 0
    worker.wait_for("/metrobus/routes/", lambda view: view.get("revision") == 1, 10)
    kinds = [{}, {"ship": "fault"}, {"ship": "fault", "refund_fails": True}]
    produce(broker, "Source", [(f"s{n}".encode(), json.dumps({"n": n, **kinds[n % 3]}).encode()) for n in range(9)])

    done = run_cli(env, "reconcile", "--wait", "60", "--json", timeout=180)
    assert done.stdout, done.stderr
    result = json.loads(done.stdout)
    assert result["pushed"] == 9
    assert (result["delivered"], result["compensated"], result["compensation_failed"]) == (3, 3, 3), result
    assert result["unaccounted"] == 0 and result["duplicates"] == 0 and result["balanced"] is True, result
    assert result["reasons"]["compensated"] == {"Fault": 3}, result["reasons"]
