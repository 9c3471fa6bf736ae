"""The examples of "Typed stops" (docs/typed-stops.md): each loaded on a fresh app's bus and driven through
Faust's agent test context, the payloads converted, the invalid ones dead-lettered with their fields, and
the rules file the types refuse."""

import json
import logging
import sys

import pytest
from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict

import metrobus_app
from metrobus_app import Envelope, Settings, create_app
from metrobus_app.routing.language import RuleError, compile_rules, load_file
from metrobus_app.wire.outcome import DEAD_LETTERED, DROPPED, FORWARDED
from tests.docs.test_examples import DOCS, EXAMPLES, load_example

PAGE = (DOCS / "typed-stops.md").read_text()


@pytest.fixture()
def typed_bus(monkeypatch):
    """A fresh app's bus standing in for the default one, its sends recorded; ``load`` loads an example on it."""
    app = create_app(Settings(app_id="docs-typed", store="memory://", external_stops=("Log",)))
    bus = app.bus
    sent: list[tuple[str, dict]] = []

    async def record(topic: str, key: bytes | None, value: bytes, headers: list | None = None) -> None:
        sent.append((topic, json.loads(value)))

    bus.sender = record
    monkeypatch.setattr(metrobus_app, "bus", bus, raising=False)
    monkeypatch.setattr(metrobus_app, "stop", bus.stop, raising=False)
    monkeypatch.setattr(metrobus_app, "busdriver", bus.busdriver, raising=False)
    bus.sent = sent

    def load(name: str, *, then=None):
        example = load_example(name)
        if then is not None:  # more stops of the test's own, declared before the app is finalized
            then(example)
        app.finalize()
        app.flow_control.resume()
        return example

    bus.load = load
    return bus


async def put(bus, stop: str, value: bytes):
    async with bus.agents[stop].test_context() as agent:
        event = await agent.put(value, key=b"k")
        return agent.results[event.message.offset]


async def put_payload(bus, stop: str, payload: dict):
    """``payload`` at ``stop`` in an envelope whose route goes on to Log."""
    envelope = Envelope.stamp(payload, [stop, "Log"])
    envelope.pop_next()
    return await put(bus, stop, envelope.to_bytes())


def letters(bus) -> list[dict]:
    return [value for topic, value in bus.sent if topic == "Error"]


# --- a pydantic model ---------------------------------------------------------------------------


async def test_the_model_stop_gets_its_payload_converted_and_its_returned_model_goes_on_as_json(typed_bus):
    example = typed_bus.load("typed_model.py")
    assert typed_bus.stops["Price"] is example.price  # returned unchanged
    outcome = await put_payload(typed_bus, "Price", {"order_id": "7", "amount": 100, "note": "gift"})
    assert (outcome.fate, outcome.detail) == (FORWARDED, "Log")
    [(topic, value)] = typed_bus.sent
    assert topic == "Log"
    assert value["payload"] == {"order_id": 7, "amount": 100.0, "note": "gift", "vat": 21.0}


async def test_an_order_that_does_not_validate_is_dead_lettered_with_its_fields_as_the_page_shows(typed_bus):
    typed_bus.load("typed_model.py")
    outcome = await put_payload(typed_bus, "Price", {"amount": "lots"})
    assert (outcome.fate, outcome.detail) == (DEAD_LETTERED, "InvalidPayload(order_id,amount)")
    [letter] = letters(typed_bus)
    shown = json.loads((EXAMPLES / "typed_letter.json").read_text())
    assert {key: letter[key] for key in shown} == shown
    assert "Traceback" not in json.dumps(letter)
    assert typed_bus.stats["Price"].dead_lettered == {"InvalidPayload(order_id,amount)": 1}
    assert "`InvalidPayload(order_id,amount)`" in PAGE


async def test_an_invalid_payload_is_never_retried_and_logs_no_traceback(typed_bus, caplog):
    typed_bus.load("typed_model.py")
    with caplog.at_level(logging.WARNING, logger="metrobus"):
        outcome = await put_payload(typed_bus, "Price", {"order_id": 1})
    assert outcome.fate == DEAD_LETTERED
    assert not any(record.exc_info for record in caplog.records)
    assert "Price's payload is not a valid Order: amount: Field required" in caplog.text


def test_the_unit_tests_of_the_page_pass(typed_bus, monkeypatch):
    model = typed_bus.load("typed_model.py")
    monkeypatch.setitem(sys.modules, "typed_model", model)  # "your module of stops"
    tests = load_example("typed_unit_test.py")
    tests.test_price_adds_the_vat()
    tests.test_price_as_the_bus_calls_it()


# --- TypedDicts and a typed busdriver -------------------------------------------------------------


async def travel(bus, record: dict) -> list:
    """One record through the busdriver and every stop of this bus it is sent to."""
    outcomes = [await put(bus, "busdriver", json.dumps(record).encode())]
    handed = 0
    while handed < len(bus.sent):
        topic, value = bus.sent[handed]
        handed += 1
        if topic in bus.agents and topic != "busdriver":
            outcomes.append(await put(bus, topic, json.dumps(value).encode()))
    return outcomes


async def test_the_typeddict_stops_carry_the_record_with_its_other_fields(typed_bus):
    typed_bus.load("typed_typeddict.py")
    outcomes = await travel(typed_bus, {"account_number": 12, "message_type_code": "NEW", "x": 1})
    assert [(o.stop, o.fate) for o in outcomes] == [
        ("busdriver", FORWARDED),
        ("AddEmail", FORWARDED),
        ("WhiteList", FORWARDED),
    ]
    topic, value = typed_bus.sent[-1]
    assert topic == "Log"
    assert value["payload"] == {"account_number": 12, "message_type_code": "NEW", "x": 1, "email": "12@example.com"}


async def test_the_typeddict_stop_still_drops_and_a_record_without_an_account_is_an_invalid_payload(typed_bus):
    typed_bus.load("typed_typeddict.py")
    dropped = await travel(typed_bus, {"account_number": 2})
    assert [(o.stop, o.fate) for o in dropped][-1] == ("WhiteList", DROPPED)
    typed_bus.sent.clear()
    missing = await travel(typed_bus, {"message_type_code": "NEW"})
    assert [(o.stop, o.fate, o.detail) for o in missing][-1] == (
        "AddEmail",
        DEAD_LETTERED,
        "InvalidPayload(account_number)",
    )
    assert letters(typed_bus)[0]["fields"] == [{"field": "account_number", "problem": "Field required"}]


async def test_the_typed_busdriver_refuses_a_record_that_is_not_a_record(typed_bus):
    typed_bus.load("typed_typeddict.py")
    [outcome] = await travel(typed_bus, {"account_number": 1, "message_type_code": 5})
    assert (outcome.stop, outcome.fate, outcome.detail) == (
        "busdriver",
        DEAD_LETTERED,
        "InvalidPayload(message_type_code)",
    )
    [letter] = letters(typed_bus)
    assert letter["fields"] == [{"field": "message_type_code", "problem": "Input should be a valid string"}]


def test_without_extra_allow_a_stop_keeps_only_its_types_fields(typed_bus):
    class Account(TypedDict):
        account_number: int

    @with_config(ConfigDict(extra="allow"))
    class Kept(TypedDict):
        account_number: int

    @typed_bus.stop("Strict")
    def strict(account: Account) -> Account:
        return account

    @typed_bus.stop("Kept")
    def kept(account: Kept) -> Kept:
        return account

    assert typed_bus.calls["Strict"]({"account_number": 1, "email": "a@example.com"}) == {"account_number": 1}
    assert typed_bus.calls["Kept"]({"account_number": 1, "email": "a@example.com"}) == {
        "account_number": 1,
        "email": "a@example.com",
    }


# --- a dataclass --------------------------------------------------------------------------------


async def test_the_dataclass_stop_gets_a_parcel_and_its_label_goes_on(typed_bus):
    example = typed_bus.load("typed_dataclass.py")
    assert example.postage(example.Parcel(2.5)) == example.Label("NL", 11.25)
    outcome = await put_payload(typed_bus, "Postage", {"weight_kg": "2.5"})
    assert (outcome.fate, outcome.detail) == (FORWARDED, "Log")
    assert typed_bus.sent[-1][1]["payload"] == {"country": "NL", "postage_eur": 11.25}
    invalid = await put_payload(typed_bus, "Postage", {"weight_kg": "heavy"})
    assert (invalid.fate, invalid.detail) == (DEAD_LETTERED, "InvalidPayload(weight_kg)")
    assert letters(typed_bus)[0]["fields"] == [
        {"field": "weight_kg", "problem": "Input should be a valid number, unable to parse string as a number"}
    ]


# --- routes checked against the types -----------------------------------------------------------

REFUSED = "rule 'audit': WhiteList needs 'email', which the record does not have"


def test_the_rules_file_the_types_cannot_carry_is_refused_with_the_message_of_the_page(typed_bus):
    typed_bus.load("typed_typeddict.py")
    with pytest.raises(RuleError) as raised:
        compile_rules(load_file(EXAMPLES / "typed_rules.toml"), typed_bus.known_stops)
    assert str(raised.value) == REFUSED
    assert REFUSED in PAGE
    fixed = {"default": ["AddEmail", "WhiteList", "Log"], "rules": [{"name": "audit", "match": {}, "route": []}]}
    fixed["rules"][0].update(match={"message_type_code": "AUDIT"}, route=["AddEmail", "WhiteList", "Log"])
    assert compile_rules(fixed, typed_bus.known_stops).default == ("AddEmail", "WhiteList", "Log")


def test_after_an_untyped_stop_anything_goes(typed_bus):
    typed_bus.load("typed_typeddict.py")
    document = {"default": ["Log", "WhiteList"], "rules": []}  # Log is untyped (an external stop)
    assert compile_rules(document, typed_bus.known_stops).default == ("Log", "WhiteList")


async def test_the_busdriver_s_own_route_is_checked_too(typed_bus):
    def skipper(example):
        def skip(record: example.Record) -> list[str]:  # a record may lack email: this route cannot work
            return ["WhiteList", "Log"]

        typed_bus.busdriver("skipper")(skip)

    typed_bus.load("typed_typeddict.py", then=skipper)
    outcome = await put(typed_bus, "skipper", json.dumps({"account_number": 1}).encode())
    assert (outcome.fate, outcome.detail) == (DEAD_LETTERED, "RouteRefused")
    [letter] = letters(typed_bus)
    assert letter["message"] == "the busdriver's route: WhiteList needs 'email', which the record does not have"
    assert "`RouteRefused`" in PAGE


# --- annotations that cannot be read ------------------------------------------------------------


def test_a_class_defined_inside_a_function_leaves_the_stop_untyped_with_a_warning(typed_bus, caplog):
    from pydantic import BaseModel

    class Local(BaseModel):
        x: int

    def local(payload: "Local") -> "Local":  # as `from __future__ import annotations` makes it: a name
        return payload

    with caplog.at_level(logging.WARNING, logger="metrobus"):
        typed_bus.stop("Local")(local)
    assert typed_bus.calls["Local"] is local
    assert "cannot be read (NameError" in caplog.text
