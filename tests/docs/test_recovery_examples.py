"""The examples of "When a stop fails" (docs/recovery.md), each imported on a fresh app's bus and driven
through Faust's agent test context: what the page says they do, they do."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from types import ModuleType

import pytest

import metrobus_app
from metrobus_app import Envelope, Retry, Settings, create_app
from metrobus_app.observe.fates import FateStore, where
from metrobus_app.observe.stats import view
from metrobus_app.wire.outcome import (
    COMPENSATED,
    COMPENSATING,
    DEAD_LETTERED,
    EXPIRED,
    FORWARDED,
    RETRYING,
    Outcome,
)
from tests.docs.test_examples import EXAMPLES, ROOT, exports, load_example


class Sent(list):
    """Every (topic, key, value as JSON) the bus sent, in order."""

    async def __call__(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.append((topic, key, json.loads(value)))

    def last(self) -> bytes:
        return json.dumps(self[-1][2]).encode()


@pytest.fixture()
def fresh_bus(monkeypatch):
    """Make a fresh app's bus stand in for the default one, its sends recorded instead of produced."""

    def make(**settings: object):
        app = create_app(Settings(app_id="docs-rec", store="memory://", **settings))
        bus = app.bus
        bus.sender = bus.sent = Sent()
        monkeypatch.setattr(metrobus_app, "bus", bus, raising=False)
        monkeypatch.setattr(metrobus_app, "stop", bus.stop, raising=False)
        monkeypatch.setattr(metrobus_app, "busdriver", bus.busdriver, raising=False)
        return app

    return make


def ready(app) -> None:
    app.finalize()
    app.flow_control.resume()


async def put(bus, agent_name: str, value: bytes, key: bytes = b"k") -> Outcome:
    async with bus.agents[agent_name].test_context() as agent:
        event = await agent.put(value, key=key)
        return agent.results[event.message.offset]


def arriving(route: list[str], payload: object, **header: object) -> bytes:
    """A message as the busdriver sends it to the first stop of ``route``."""
    envelope = Envelope.stamp(payload, route, **header)
    envelope.pop_next()
    return envelope.to_bytes()


# --- retries ---------------------------------------------------------------------------------------


@pytest.fixture()
def retrying(fresh_bus) -> Iterator[tuple[object, ModuleType]]:
    app = fresh_bus(external_stops=("WhiteList",))
    example = load_example("recovery_retry.py")
    ready(app)
    yield app.bus, example


def flaky(example: ModuleType, monkeypatch, fails: int, error: type[Exception] = TimeoutError) -> list[str]:
    """Make the example's lookup fail ``fails`` times, then answer as it does; returns the accounts asked."""
    asked: list[str] = []
    answer = example.lookup_email

    def lookup(account: str) -> str:
        asked.append(account)
        if len(asked) <= fails:
            raise error("account service timed out")
        return answer(account)

    monkeypatch.setattr(example, "lookup_email", lookup)
    return asked


def test_the_retrying_stop_registers_its_policy(retrying):
    bus, example = retrying
    assert bus.stops["AddEmail"] is example.add_email
    policy = bus.recovery.policies["AddEmail"]
    assert isinstance(policy, Retry)
    assert (policy.attempts, policy.on) == (5, (TimeoutError, ConnectionError))
    waits = [policy.backoff.wait_s(n) for n in range(1, 5)]
    for wait, most in zip(waits, (0.2, 0.4, 0.8, 1.6), strict=True):
        assert most * 0.8 <= wait <= most  # "at most ..., the jitter takes up to a fifth off each"
    assert policy.backoff.wait_s(100) <= 60.0  # the cap
    assert {"docs-rec-retry-5s", "docs-rec-retry-30s", "docs-rec-retry-300s"} <= set(bus.agents)


async def test_a_passing_failure_is_retried_in_place_and_the_next_stop_starts_with_no_attempts(retrying, monkeypatch):
    bus, example = retrying
    asked = flaky(example, monkeypatch, fails=2)
    outcome = await put(bus, "AddEmail", arriving(["AddEmail", "WhiteList"], {"account": "acc-1"}))
    assert outcome == Outcome("AddEmail", FORWARDED, "WhiteList")
    assert asked == ["acc-1"] * 3
    [(topic, _, value)] = bus.sent  # the retries waited in place: nothing went through a delay topic
    assert topic == "WhiteList"
    assert value["payload"] == {"account": "acc-1", "email": "ann@example.com"}
    assert "attempts" not in value["header"]  # WhiteList starts with none
    failed = [(hop["stop"], hop["attempt"], hop["error"]) for hop in value["header"]["hops"] if "attempt" in hop]
    assert failed == [("AddEmail", 1, "TimeoutError"), ("AddEmail", 2, "TimeoutError")]
    stats = view(bus.stats.snapshot())["stops"]["AddEmail"]
    assert stats["retried_by_where"] == {"in place": 2}


async def test_a_longer_wait_goes_through_a_delay_topic_and_comes_back_when_due(retrying, monkeypatch):
    bus, example = retrying
    flaky(example, monkeypatch, fails=4)
    message = arriving(["AddEmail", "WhiteList"], {"account": "acc-1"})
    outcome = await put(bus, "AddEmail", message, key=b"acc-1")
    # attempts 1 to 3 waited in place (up to 0.8 s); the wait after the fourth (over 1 s) is too long
    assert (outcome.fate, outcome.detail) == (RETRYING, "docs-rec-retry-5s")
    assert "attempt 4 of 5 failed: TimeoutError" in outcome.message
    [(topic, key, value)] = bus.sent
    assert (topic, key) == ("docs-rec-retry-5s", b"acc-1")  # the key is kept
    retry = value["header"]["retry"]
    assert (retry["stop"], retry["attempt"], retry["of"]) == ("AddEmail", 5, 5)
    assert 0 < retry["due"] - time.time() <= 1.6

    value["header"]["retry"]["due"] = time.time() - 1  # as if the wait were over
    back = await put(bus, "docs-rec-retry-5s", json.dumps(value).encode(), key=b"acc-1")
    assert back == Outcome("docs-rec-retry-5s", FORWARDED, "AddEmail")
    assert bus.sent[-1][:2] == ("AddEmail", b"acc-1")
    done = await put(bus, "AddEmail", bus.sent.last(), key=b"acc-1")
    assert done == Outcome("AddEmail", FORWARDED, "WhiteList")
    stats = view(bus.stats.snapshot())
    assert stats["stops"]["AddEmail"]["retried_by_where"] == {"in place": 3, "docs-rec-retry-5s": 1}


async def test_a_message_sent_back_from_a_delay_topic_no_longer_counts_as_waiting(retrying, monkeypatch):
    bus, example = retrying
    flaky(example, monkeypatch, fails=4)
    await put(bus, "AddEmail", arriving(["AddEmail", "WhiteList"], {"account": "acc-1"}))
    assert view(bus.stats.snapshot())["bus"]["waiting_by_delay_topic"] == {"docs-rec-retry-5s": 1}
    value = bus.sent[-1][2]
    value["header"]["retry"]["due"] = time.time() - 1
    await put(bus, "docs-rec-retry-5s", json.dumps(value).encode())
    assert view(bus.stats.snapshot())["bus"]["waiting_to_retry"] == 0


async def test_where_says_what_the_page_says_of_a_retrying_message(retrying, monkeypatch):
    bus, example = retrying
    fates = FateStore(100, 60, "w")
    bus.observers.append(fates.record)
    said: list[str] = []
    bus.observers.append(lambda outcome: said.append(where(fates.get(outcome.envelope.id))))
    flaky(example, monkeypatch, fails=4)
    await put(bus, "AddEmail", arriving(["AddEmail", "WhiteList"], {"account": "acc-1"}))
    assert said[:3] == [
        f"retrying at AddEmail in place (attempt {n + 1} of 5); attempt {n} failed: TimeoutError: "
        "account service timed out"
        for n in (1, 2, 3)
    ]
    assert re.fullmatch(
        r"waiting to retry AddEmail \(attempt 5 of 5, due at \S+Z\) in docs-rec-retry-5s;"
        r" attempt 4 failed: TimeoutError: account service timed out",
        said[3],
    )
    page = (ROOT / "docs" / "recovery.md").read_text()
    assert "`waiting to retry AddEmail (attempt 3 of 5, due at " in page
    assert "`retrying at AddEmail in place (attempt 3 of 5); attempt 2 failed: " in page


async def test_a_failure_not_listed_is_dead_lettered_at_once(retrying, monkeypatch):
    bus, example = retrying
    asked = flaky(example, monkeypatch, fails=0)
    outcome = await put(bus, "AddEmail", arriving(["AddEmail"], {"account": "acc-unknown"}))
    assert (outcome.fate, outcome.detail) == (DEAD_LETTERED, "KeyError")
    assert asked == ["acc-unknown"]  # tried once
    assert [topic for topic, _, _ in bus.sent] == ["Error"]


async def test_no_attempts_left_is_final(retrying, monkeypatch):
    bus, example = retrying
    flaky(example, monkeypatch, fails=99, error=ConnectionError)
    value = json.loads(arriving(["AddEmail"], {"account": "acc-1"}))
    value["header"]["attempts"] = 4  # four tries failed already
    outcome = await put(bus, "AddEmail", json.dumps(value).encode())
    assert (outcome.fate, outcome.detail) == (DEAD_LETTERED, "ConnectionError")


# --- the delay tiers --------------------------------------------------------------------------------


def test_the_tier_settings_give_the_delay_topics_the_page_names(fresh_bus):
    environ = exports("recovery_tiers.sh")
    settings = Settings.from_env(environ)
    assert settings.retry_in_place_max_ms == 500
    app = create_app(settings)
    app.bus.stop("AddEmail", retry=Retry())(lambda payload: payload)
    names = ["metrobus-retry-10s", "metrobus-retry-60s", "metrobus-retry-600s"]
    assert app.bus.recovery.delay_topics() == names
    assert set(names) <= set(app.bus.agents)
    for name in names:
        assert name in (EXAMPLES / "recovery_tiers.sh").read_text()


# --- compensation -----------------------------------------------------------------------------------


@pytest.fixture()
def shop(fresh_bus):
    app = fresh_bus()
    example = load_example("recovery_shop.py")
    ready(app)
    return app.bus, example


def test_the_shop_declares_its_compensations_both_ways(shop):
    bus, example = shop
    assert bus.recovery.undos == {"Reserve": example.release, "Charge": example.refund}
    assert "Ship" not in bus.recovery.undos


async def test_a_delivered_order_keeps_what_its_stops_did(shop):
    bus, example = shop
    order = {"id": "o-1", "sku": "book", "amount": 12, "country": "BE"}
    await put(bus, "Reserve", arriving(["Reserve", "Charge", "Ship"], order))
    await put(bus, "Charge", bus.sent.last())
    assert bus.sent[-1][2]["header"]["compensate"] == [
        {"stop": "Reserve", "log": {"hold": "hold-o-1"}},
        {"stop": "Charge", "log": None},
    ]
    end = await put(bus, "Ship", bus.sent.last())
    assert end.fate == "delivered"
    assert example.HOLDS == {"hold-o-1": "book"}
    assert example.CHARGES == {"o-1": 12}


async def test_a_fault_at_ship_undoes_charge_then_reserve_and_dead_letters_the_story(shop):
    bus, example = shop
    order = {"id": "o-2", "sku": "lamp", "amount": 30, "country": "US"}
    failed = await put(bus, "Reserve", arriving(["Reserve", "Charge", "Ship"], order))
    failed = await put(bus, "Charge", bus.sent.last())
    assert example.HOLDS == {"hold-o-2": "lamp"} and example.CHARGES == {"o-2": 30}
    failed = await put(bus, "Ship", bus.sent.last())
    assert (failed.fate, failed.detail) == (COMPENSATING, "Fault")
    assert bus.sent[-1][0] == "Charge"  # the newest stop done first, on its own topic
    await put(bus, "Charge", bus.sent.last())
    assert example.CHARGES == {}  # refunded
    assert bus.sent[-1][0] == "Reserve"
    end = await put(bus, "Reserve", bus.sent.last())
    assert example.HOLDS == {}  # released, with the hold Reserve remembered
    assert (end.fate, end.stop, end.detail) == (COMPENSATED, "Reserve", "Fault")

    topic, _, letter = bus.sent[-1]
    assert topic == "Error"
    assert (letter["stop"], letter["error"]) == ("Ship", "Fault")
    assert letter["message"] == "no carrier ships to US"
    assert letter["compensated"] == ["Charge", "Reserve"]
    replayed = json.loads(letter["value"])  # what a replay sends back to Ship: the undo stack kept
    assert replayed["header"]["compensate"] == [
        {"stop": "Reserve", "log": {"hold": "hold-o-2"}},
        {"stop": "Charge", "log": None},
    ]
    assert letter["topic"] == "Ship"
    stats = view(bus.stats.snapshot())
    assert stats["stops"]["Ship"]["compensating_by_error"] == {"Fault": 1}
    assert stats["bus"]["compensated"] == 1


async def test_a_compensation_that_fails_ends_as_compensation_failed_with_what_was_not_undone(shop, monkeypatch):
    bus, example = shop

    async def refund_refused(order: dict, log: None) -> None:
        raise RuntimeError("the payment service refused the refund")

    monkeypatch.setitem(bus.recovery.undos, "Charge", refund_refused)
    order = {"id": "o-3", "sku": "desk", "amount": 99, "country": "US"}
    await put(bus, "Reserve", arriving(["Reserve", "Charge", "Ship"], order))
    await put(bus, "Charge", bus.sent.last())
    await put(bus, "Ship", bus.sent.last())
    end = await put(bus, "Charge", bus.sent.last())  # RuntimeError is not in Charge's policy: final at once
    assert (end.fate, end.stop) == ("compensation_failed", "Charge")
    letter = bus.sent[-1][2]
    assert (letter["stop"], letter["error"]) == ("Ship", "CompensationFailed")
    assert (letter["first_error"], letter["first_message"]) == ("Fault", "no carrier ships to US")
    assert letter["compensated"] == []
    assert letter["not_undone"] == ["Charge", "Reserve"]
    assert example.HOLDS == {"hold-o-3": "desk"}  # Reserve was not undone: the letter says so


async def test_a_compensation_that_fails_passingly_is_retried_by_its_stops_policy(shop, monkeypatch):
    bus, example = shop
    tries: list[str] = []
    refund = example.refund

    async def slow_once(order: dict, log: None) -> None:
        tries.append(order["id"])
        if len(tries) == 1:
            raise TimeoutError("the payment service timed out")
        await refund(order, log)

    monkeypatch.setitem(bus.recovery.undos, "Charge", slow_once)
    order = {"id": "o-4", "sku": "pen", "amount": 2, "country": "US"}
    await put(bus, "Reserve", arriving(["Reserve", "Charge", "Ship"], order))
    await put(bus, "Charge", bus.sent.last())
    await put(bus, "Ship", bus.sent.last())
    # Charge's policy: 3 attempts, fixed(0.5), within the default 1 s in place
    undone = await put(bus, "Charge", bus.sent.last())
    assert undone == Outcome("Charge", COMPENSATING, "Fault")  # undone, and on to Reserve to undo
    assert bus.sent[-1][0] == "Reserve"
    assert tries == ["o-4", "o-4"]
    assert example.CHARGES == {}


# --- deadlines --------------------------------------------------------------------------------------


@pytest.fixture()
def express(fresh_bus):
    app = fresh_bus()
    shop = load_example("recovery_shop.py")
    driver = load_example("recovery_deadline.py")
    ready(app)
    return app.bus, shop, driver


def test_the_busdriver_gives_express_orders_a_deadline(express):
    bus, _, driver = express
    before = time.time()
    stamped = driver.route({"id": "o-5", "express": True})
    assert before + 30 <= stamped.header["deadline"] <= time.time() + 30
    assert stamped.next_stop == "Reserve"
    assert "deadline" not in driver.route({"id": "o-6"}).header
    assert "busdriver" in bus.agents


async def test_an_order_past_its_deadline_is_not_run_it_is_compensated_and_expires(express):
    bus, shop, _ = express
    order = {"id": "o-7", "sku": "chair", "amount": 40, "country": "BE", "express": True}
    await put(bus, "busdriver", json.dumps(order).encode())
    assert bus.sent[-1][0] == "Reserve"
    await put(bus, "Reserve", bus.sent.last())
    late = bus.sent[-1][2]
    late["header"]["deadline"] = time.time() - 1  # as if the 30 s had passed on the way to Charge
    outcome = await put(bus, "Charge", json.dumps(late).encode())
    assert (outcome.fate, outcome.detail) == (COMPENSATING, "DeadlinePassed")
    assert shop.CHARGES == {}  # Charge did not run
    end = await put(bus, "Reserve", bus.sent.last())
    assert (end.fate, end.detail) == (EXPIRED, "DeadlinePassed")
    assert shop.HOLDS == {}
    letter = bus.sent[-1][2]
    assert (letter["stop"], letter["error"], letter["compensated"]) == ("Charge", "DeadlinePassed", ["Reserve"])
    assert view(bus.stats.snapshot())["bus"]["expired"] == 1


async def test_where_tells_the_story_of_a_compensated_order_as_the_page_does(shop, monkeypatch):
    bus, _ = shop
    fates = FateStore(100, 60, "w")
    bus.observers.append(fates.record)
    page = (ROOT / "docs" / "recovery.md").read_text()

    async def to_the_end(order: dict, stops: int) -> str:
        value = json.loads(arriving(["Reserve", "Charge", "Ship"], order))
        await put(bus, "Reserve", json.dumps(value).encode())
        for _ in range(stops):
            await put(bus, bus.sent[-1][0], bus.sent.last())
        return where(fates.get(value["header"]["id"]))

    said = await to_the_end({"id": "o-8", "sku": "cup", "amount": 5, "country": "US"}, stops=4)
    assert (
        said == "compensated after Ship failed: Fault: no carrier ships to US; undone: Charge, Reserve; dead-lettered"
    )
    assert f"`{said}`" in page

    async def refund_refused(order: dict, log: None) -> None:
        raise RuntimeError("refund refused")

    monkeypatch.setitem(bus.recovery.undos, "Charge", refund_refused)
    said = await to_the_end({"id": "o-9", "sku": "cup", "amount": 5, "country": "US"}, stops=3)
    assert said.startswith("compensation failed at Charge: Charge's compensation failed: RuntimeError: refund refused")
    assert f"`{said}`" in page
