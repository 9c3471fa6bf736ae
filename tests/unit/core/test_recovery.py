"""Retries, compensation and deadlines at the stops, through Faust's agent test context."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from metrobus_app import Envelope, Fault, Retry, Settings, create_app, remember
from metrobus_app.core.retry import fixed
from metrobus_app.wire.outcome import (
    COMPENSATED,
    COMPENSATING,
    COMPENSATION_FAILED,
    DEAD_LETTERED,
    EXPIRED,
    FORWARDED,
    RETRYING,
    Outcome,
)


def arriving(route: list[str], payload: object, **header: object) -> bytes:
    envelope = Envelope.stamp(payload, route, **header)
    envelope.pop_next()
    return envelope.to_bytes()


@pytest.fixture()
def shop():
    """Reserve (undoable) -> Charge (undoable, flaky) -> Ship; every send recorded."""
    app = create_app(Settings(app_id="unit-rec", store="memory://", retry_in_place_max_ms=50))
    bus = app.bus
    sent: list[tuple[str, bytes | None, dict]] = []
    tries: dict[str, int] = {}
    undone: list[tuple[str, object]] = []
    seen: list[Outcome] = []

    async def record(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append((topic, key, json.loads(value)))

    bus.sender = record
    bus.observers.append(seen.append)

    @bus.stop("Reserve")
    def reserve(order: dict) -> dict:
        remember({"hold": f"h-{order['id']}"})
        return {**order, "reserved": True}

    @reserve.compensate
    def release(order: dict, log: dict) -> None:
        undone.append(("Reserve", log))

    @bus.stop("Charge", retry=Retry(attempts=3, backoff=fixed(0.01)))
    def charge(order: dict) -> dict:
        tries[order["id"]] = tries.get(order["id"], 0) + 1
        if tries[order["id"]] <= order.get("fail_times", 0):
            order["scribbled"] = True  # a stop that changes its payload before failing
            raise TimeoutError("payment service timed out")
        return {**order, "charged": True}

    @charge.compensate
    async def refund(order: dict, log: object) -> None:
        if order.get("refund_fails"):
            raise RuntimeError("refund refused")
        undone.append(("Charge", log))

    @bus.stop("Ship", retry=Retry(attempts=4, on=(ConnectionError,), backoff=fixed(12)))
    def ship(order: dict) -> dict:
        if order.get("ship") == "fault":
            raise Fault("no carrier for this address")
        if order.get("ship") == "down":
            raise ConnectionError("carrier down")
        return order

    app.finalize()
    app.flow_control.resume()
    bus.sent, bus.tries, bus.undone, bus.seen = sent, tries, undone, seen
    return bus


async def put(bus, stop: str, value: bytes, key: bytes = b"k") -> Outcome:
    async with bus.agents[stop].test_context() as agent:
        event = await agent.put(value, key=key)
        return agent.results[event.message.offset]


async def test_a_passing_failure_is_retried_in_place_and_the_count_starts_again_at_the_next_stop(shop):
    outcome = await put(shop, "Charge", arriving(["Charge", "Ship"], {"id": 1, "fail_times": 2}))
    assert outcome == Outcome("Charge", FORWARDED, "Ship")
    [(topic, _, value)] = shop.sent
    assert topic == "Ship"
    assert value["payload"] == {"id": 1, "fail_times": 2, "charged": True}  # not the scribbled payload
    assert "attempts" not in value["header"]
    failed = [hop for hop in value["header"]["hops"] if "attempt" in hop]
    assert [(hop["stop"], hop["attempt"], hop["error"]) for hop in failed] == [
        ("Charge", 1, "TimeoutError"),
        ("Charge", 2, "TimeoutError"),
    ]
    assert [o.fate for o in shop.seen] == [RETRYING, RETRYING, FORWARDED]
    assert shop.seen[0].detail == "in place"
    assert "attempt 1 of 3 failed: TimeoutError: payment service timed out" in shop.seen[0].message


async def test_a_failure_not_listed_is_final_at_once(shop):
    outcome = await put(shop, "Ship", arriving(["Ship"], {"id": 2, "ship": "fault"}))
    assert (outcome.fate, outcome.detail) == (DEAD_LETTERED, "Fault")
    [(topic, _, letter)] = shop.sent
    assert topic == "Error"
    assert letter["error"] == "Fault"


async def test_a_long_wait_goes_through_the_delay_topic_and_comes_back_when_due(shop):
    outcome = await put(shop, "Ship", arriving(["Ship"], {"id": 3, "ship": "down"}), key=b"order-3")
    assert (outcome.fate, outcome.detail) == (RETRYING, "unit-rec-retry-30s")  # 12 s: the 30 s tier
    assert "attempt 1 of 4 failed: ConnectionError: carrier down; next due at" in outcome.message
    [(topic, key, value)] = shop.sent
    assert (topic, key) == ("unit-rec-retry-30s", b"order-3")
    retry = value["header"]["retry"]
    assert (retry["stop"], retry["attempt"], retry["of"]) == ("Ship", 2, 4)
    assert 11 < retry["due"] - time.time() <= 12
    assert value["header"]["attempts"] == 1

    value["header"]["retry"]["due"] = time.time() - 1  # as if the wait were over
    back = await put(shop, "unit-rec-retry-30s", json.dumps(value).encode(), key=b"order-3")
    assert back == Outcome("unit-rec-retry-30s", FORWARDED, "Ship")
    assert shop.sent[-1][:2] == ("Ship", b"order-3")

    again = await put(shop, "Ship", json.dumps(shop.sent[-1][2]).encode(), key=b"order-3")
    assert again.fate == RETRYING
    assert shop.sent[-1][2]["header"]["retry"]["attempt"] == 3  # attempt 2 failed: the count went on


async def test_a_fatal_error_undoes_the_stops_done_newest_first_then_dead_letters_the_story(shop):
    await put(shop, "Reserve", arriving(["Reserve", "Charge", "Ship"], {"id": 4, "ship": "fault"}))
    await put(shop, "Charge", json.dumps(shop.sent[-1][2]).encode())
    failed = await put(shop, "Ship", json.dumps(shop.sent[-1][2]).encode())
    assert (failed.fate, failed.detail) == (COMPENSATING, "Fault")
    assert shop.sent[-1][0] == "Charge"  # the newest stop done is undone first, on its own topic

    await put(shop, "Charge", json.dumps(shop.sent[-1][2]).encode())
    assert shop.sent[-1][0] == "Reserve"
    end = await put(shop, "Reserve", json.dumps(shop.sent[-1][2]).encode())
    assert (end.fate, end.stop, end.detail) == (COMPENSATED, "Reserve", "Fault")
    assert shop.undone == [("Charge", None), ("Reserve", {"hold": "h-4"})]
    topic, _, letter = shop.sent[-1]
    assert topic == "Error"
    assert (letter["stop"], letter["error"], letter["topic"]) == ("Ship", "Fault", "Ship")
    assert letter["compensated"] == ["Charge", "Reserve"]
    replayed = json.loads(letter["value"])  # what a replay sends back to Ship: the undo stack kept
    assert [entry["stop"] for entry in replayed["header"]["compensate"]] == ["Reserve", "Charge"]
    assert "compensating" not in replayed["header"]


async def test_a_failing_compensation_ends_as_compensation_failed_naming_what_was_not_undone(shop):
    await put(shop, "Reserve", arriving(["Reserve", "Charge", "Ship"], {"id": 5, "ship": "fault", "refund_fails": 1}))
    await put(shop, "Charge", json.dumps(shop.sent[-1][2]).encode())
    await put(shop, "Ship", json.dumps(shop.sent[-1][2]).encode())
    end = await put(shop, "Charge", json.dumps(shop.sent[-1][2]).encode())
    assert (end.fate, end.stop) == (COMPENSATION_FAILED, "Charge")
    letter = shop.sent[-1][2]
    assert letter["error"] == "CompensationFailed"
    assert letter["not_undone"] == ["Charge", "Reserve"]
    assert "refund refused" in letter["message"]
    assert shop.undone == []


async def test_a_message_past_its_deadline_is_not_run_it_is_compensated_and_expires(shop):
    await put(shop, "Reserve", arriving(["Reserve", "Charge"], {"id": 6}, deadline_s=0.05))
    await asyncio.sleep(0.06)
    expired = await put(shop, "Charge", json.dumps(shop.sent[-1][2]).encode())
    assert (expired.fate, expired.detail) == (COMPENSATING, "DeadlinePassed")
    assert 6 not in shop.tries  # Charge did not run
    end = await put(shop, "Reserve", json.dumps(shop.sent[-1][2]).encode())
    assert (end.fate, end.detail) == (EXPIRED, "DeadlinePassed")
    assert shop.sent[-1][2]["compensated"] == ["Reserve"]


async def test_an_expired_message_with_nothing_to_undo_is_dead_lettered_as_expired(shop):
    outcome = await put(shop, "Charge", arriving(["Charge"], {"id": 7}, deadline_s=-1))
    assert (outcome.fate, outcome.detail) == (EXPIRED, "DeadlinePassed")
    assert shop.sent[-1][0] == "Error"


async def test_each_undo_on_the_way_is_compensating_and_the_end_carries_the_story(shop):
    await put(shop, "Reserve", arriving(["Reserve", "Charge", "Ship"], {"id": 8, "ship": "fault"}))
    await put(shop, "Charge", json.dumps(shop.sent[-1][2]).encode())
    await put(shop, "Ship", json.dumps(shop.sent[-1][2]).encode())
    on_the_way = await put(shop, "Charge", json.dumps(shop.sent[-1][2]).encode())
    assert (on_the_way.fate, on_the_way.detail) == (COMPENSATING, "Fault")  # not a forward along the route
    end = await put(shop, "Reserve", json.dumps(shop.sent[-1][2]).encode())
    told = end.envelope.header["compensating"]
    assert (told["stop"], told["undone"]) == ("Ship", ["Charge", "Reserve"])
