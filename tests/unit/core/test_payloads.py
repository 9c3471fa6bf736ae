"""Typed stops: payloads validated and converted by their annotations; routes checked against the types."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from metrobus_app import Envelope, Settings, create_app
from metrobus_app.core.payloads import payload_type, route_problem, stop_types, typed
from metrobus_app.errors import InvalidPayload
from metrobus_app.wire.outcome import DEAD_LETTERED, FORWARDED


class Account(BaseModel):
    model_config = ConfigDict(extra="allow")
    account_number: int


class Contact(Account):
    email: str


class Point(TypedDict):
    x: int
    y: int


class Record(BaseModel):
    model_config = ConfigDict(extra="allow")
    account_number: int
    message_type_code: str


@dataclass
class Box:
    width: float
    label: str = "box"


def test_a_model_payload_is_validated_and_converted_and_a_returned_model_is_json_again():
    def add_email(account: Account) -> Contact:
        assert isinstance(account.account_number, int)
        return Contact(**account.model_dump(), email=f"{account.account_number}@example.com")

    run = typed(add_email, "AddEmail", stop_types(add_email))
    assert run({"account_number": "7", "x": 1}) == {"account_number": 7, "x": 1, "email": "7@example.com"}


def test_a_typeddict_and_a_dataclass_are_validated_too():
    def move(point: Point) -> Point:
        return {"x": point["x"] + 1, "y": point["y"]}

    def grow(box: Box) -> Box:
        return Box(box.width * 2, box.label)

    assert typed(move, "Move", stop_types(move))({"x": "1", "y": 2}) == {"x": 2, "y": 2}
    assert typed(grow, "Grow", stop_types(grow))({"width": 1.5}) == {"width": 3.0, "label": "box"}
    with pytest.raises(InvalidPayload, match=r"Grow's payload is not a valid Box: width: Field required"):
        typed(grow, "Grow", stop_types(grow))({})


def test_an_invalid_payload_names_every_field_and_what_is_wrong():
    def add_email(account: Account) -> Account:
        return account

    with pytest.raises(InvalidPayload) as raised:
        typed(add_email, "AddEmail", stop_types(add_email))({"account_number": "seven"})
    assert raised.value.problems == [
        {"field": "account_number", "problem": "Input should be a valid integer, unable to parse string as an integer"}
    ]
    assert raised.value.detail == "InvalidPayload(account_number)"


def test_an_untyped_stop_is_not_wrapped_at_all():
    def plain(payload: dict) -> dict:
        return payload

    def bare(payload):
        return payload

    assert typed(plain, "Plain", stop_types(plain)) is plain
    assert typed(bare, "Bare", stop_types(bare)) is bare
    assert payload_type(dict) is None


async def test_an_async_typed_stop_is_awaited_and_converted():
    async def add_email(account: Account) -> Contact:
        return Contact(account_number=account.account_number, email="a@example.com")

    run = typed(add_email, "AddEmail", stop_types(add_email))
    assert await run({"account_number": 1}) == {"account_number": 1, "email": "a@example.com"}


def test_a_route_whose_stop_needs_a_field_the_one_before_does_not_give_is_refused():
    def add_email(account: Account) -> Contact: ...

    def whitelist(contact: Contact) -> Contact | None: ...

    def untyped(payload: dict) -> dict: ...

    types = {"AddEmail": stop_types(add_email), "WhiteList": stop_types(whitelist), "Log": stop_types(untyped)}
    record = payload_type(Record)
    assert route_problem(["AddEmail", "WhiteList", "Log"], types, record, "rule 'audit'") is None
    assert route_problem(["WhiteList", "Log"], types, record, "rule 'audit'") == (
        "rule 'audit': WhiteList needs 'email', which the record does not have"
    )
    assert route_problem(["Log", "WhiteList"], types, record, "the route") is None  # after an untyped stop: anything
    assert route_problem(["WhiteList"], types, None, "the route") is None  # a record of no type: anything

    def counter(contact: Contact) -> Account: ...

    types["Count"] = stop_types(counter)
    assert route_problem(["AddEmail", "Count", "WhiteList"], types, record, "rule 'x'") == (
        "rule 'x': WhiteList needs 'email', which Count's output Account does not have"
    )


@pytest.fixture()
def typed_bus():
    app = create_app(Settings(app_id="unit-typed", store="memory://", external_stops=("Log",)))
    bus = app.bus
    sent: list[tuple[str, dict]] = []

    async def record(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append((topic, json.loads(value)))

    bus.sender = record

    @bus.stop("AddEmail")
    def add_email(account: Account) -> Contact:
        return Contact(**account.model_dump(), email="a@example.com")

    app.finalize()
    app.flow_control.resume()
    bus.sent = sent
    return bus


async def put(bus, stop: str, payload: dict):
    envelope = Envelope.stamp(payload, [stop, "Log"])
    envelope.pop_next()
    async with bus.agents[stop].test_context() as agent:
        event = await agent.put(envelope.to_bytes(), key=b"k")
        return agent.results[event.message.offset]


async def test_on_the_bus_a_typed_stop_forwards_the_converted_payload(typed_bus):
    outcome = await put(typed_bus, "AddEmail", {"account_number": "42", "x": 3})
    assert (outcome.fate, outcome.detail) == (FORWARDED, "Log")
    [(_, value)] = typed_bus.sent
    assert value["payload"] == {"account_number": 42, "x": 3, "email": "a@example.com"}


async def test_on_the_bus_a_payload_that_does_not_validate_is_dead_lettered_with_its_fields(typed_bus):
    outcome = await put(typed_bus, "AddEmail", {"x": 3})
    assert (outcome.fate, outcome.detail) == (DEAD_LETTERED, "InvalidPayload(account_number)")
    [(topic, letter)] = typed_bus.sent
    assert topic == "Error"
    assert letter["error"] == "InvalidPayload"
    assert letter["fields"] == [{"field": "account_number", "problem": "Field required"}]
    assert typed_bus.stats["AddEmail"].dead_lettered == {"InvalidPayload(account_number)": 1}


@pytest.fixture()
def typed_demo():
    """The demo's shape, typed: a busdriver of Records, AddEmail (Account -> Contact), WhiteList (Contact)."""
    app = create_app(Settings(app_id="unit-typed-demo", store="memory://", external_stops=("Log",)))
    bus = app.bus
    sent: list[tuple[str, dict]] = []

    async def record(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append((topic, json.loads(value)))

    bus.sender = record

    @bus.busdriver()
    def route(record: Record) -> list[str]:
        return ["WhiteList", "Log"] if record.message_type_code == "BAD" else ["AddEmail", "WhiteList", "Log"]

    @bus.stop("AddEmail")
    def add_email(account: Account) -> Contact:
        return Contact(**account.model_dump(), email="a@example.com")

    @bus.stop("WhiteList")
    def whitelist(contact: Contact) -> Contact:
        return contact

    app.finalize()
    app.flow_control.resume()
    bus.sent = sent
    return bus


def test_rules_whose_types_cannot_carry_the_route_are_refused_with_the_field_and_why(typed_demo):
    from metrobus_app.routing.language import RuleError, compile_rules

    good = {"default": ["AddEmail", "WhiteList", "Log"], "rules": []}
    assert compile_rules(good, typed_demo.known_stops).default == ("AddEmail", "WhiteList", "Log")
    bad = {"default": ["Log"], "rules": [{"name": "audit", "match": {"x": 1}, "route": ["WhiteList", "Log"]}]}
    with pytest.raises(RuleError, match=r"^rule 'audit': WhiteList needs 'email', which the record does not have$"):
        compile_rules(bad, typed_demo.known_stops)


async def test_a_busdriver_route_the_types_cannot_carry_is_dead_lettered_at_the_busdriver(typed_demo):
    async with typed_demo.agents["busdriver"].test_context() as agent:
        good = await agent.put(json.dumps({"account_number": 1, "message_type_code": "OK"}).encode(), key=b"k")
        bad = await agent.put(json.dumps({"account_number": 2, "message_type_code": "BAD"}).encode(), key=b"k")
        missing = await agent.put(json.dumps({"message_type_code": "OK"}).encode(), key=b"k")
        outcomes = [agent.results[event.message.offset] for event in (good, bad, missing)]
    assert [(o.fate, o.detail) for o in outcomes] == [
        (FORWARDED, "AddEmail"),
        (DEAD_LETTERED, "RouteRefused"),
        (DEAD_LETTERED, "InvalidPayload(account_number)"),
    ]
    letters = [value for topic, value in typed_demo.sent if topic == "Error"]
    assert letters[0]["message"] == "the busdriver's route: WhiteList needs 'email', which the record does not have"
