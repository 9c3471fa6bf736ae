"""The demo's stops, called directly and through Faust's test context on the real app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.busdriver import DEFAULT_ROUTE, route, rules
from agents.contactpoint import add_email
from agents.logstop import log_message
from agents.payloads import Account, Contact, Record
from agents.whitelist import check_whitelist
from metrobus_app import Drop, Envelope, bus
from tables import emails, whitelist
from tables.files import WHITELISTED


@pytest.fixture()
def caches(test_app):
    fill(emails, {"1000001": "ann.1000001@example.com", "1000002": "bob.1000002@example.com"})
    fill(whitelist, {"ann.1000001@example.com": WHITELISTED})
    yield
    for cache in (emails, whitelist):
        cache.close()
        cache.ready.clear()


def fill(cache, entries: dict[str, str]) -> None:
    """Fill a cache's in-memory store as its changelog would, and mark it caught up."""
    store = cache.open("memory://", Path("unused"))
    store.apply(((k.encode(), v.encode()) for k, v in entries.items()), offset=len(entries) - 1)
    cache.ready.set()


async def through(stop: str, payload: dict, route_ahead: list[str]) -> dict | None:
    envelope = Envelope.stamp(payload, [stop, *route_ahead])
    envelope.pop_next()
    async with bus.agents[stop].test_context() as agent:
        event = await agent.put(envelope.to_bytes(), key=b"k")
        return agent.results[event.message.offset]


@pytest.fixture()
def no_stored_rules():
    """The busdriver's rule store open and caught up, with no rules stored: the rules file applies."""
    rules.cache.open("memory://", Path("unused"))
    rules.cache.ready.set()
    yield rules
    rules.cache.close()
    rules.cache.ready.clear()


async def test_the_busdriver_routes_by_message_type_code(no_stored_rules):
    assert list(await route(Record(message_type_code="ALTABC"))) == DEFAULT_ROUTE == ["AddEmail", "WhiteList", "Log"]
    assert list(await route(Record(message_type_code="AUDIT"))) == ["AddEmail", "Log"]
    assert list(await route(Record())) == DEFAULT_ROUTE
    assert no_stored_rules.source == "file"


def test_contactpoint_adds_the_email_or_drops(caches):
    assert add_email({"account_number": 1000001, "x": 4}) == Contact(
        account_number=1000001, x=4, email="ann.1000001@example.com"
    )
    with pytest.raises(Drop, match="no email for account"):
        add_email(Account(account_number=1999999))


def test_whitelist_marks_or_drops(caches):
    assert check_whitelist(Contact(account_number=1000001, email="ann.1000001@example.com"))["whitelist"] is True
    with pytest.raises(Drop, match="not whitelisted"):
        check_whitelist(Contact(account_number=1000002, email="bob.1000002@example.com"))


def test_logstop_logs_the_final_message(caplog):
    caplog.set_level("INFO")
    assert log_message({"x": 1}) == {"x": 1}
    assert "delivered: {'x': 1}" in caplog.text


async def test_the_demo_route_through_the_agents(caches, sent):
    outcome = await through("AddEmail", {"account_number": 1000001}, ["WhiteList", "Log"])
    assert (outcome.fate, outcome.detail) == ("forwarded", "WhiteList")
    forwarded = json.loads(sent[-1][2])
    assert forwarded["payload"]["email"] == "ann.1000001@example.com"

    outcome = await through("WhiteList", forwarded["payload"], ["Log"])
    assert (outcome.fate, outcome.detail) == ("forwarded", "Log")
    assert json.loads(sent[-1][2])["payload"]["whitelist"] is True

    assert (await through("Log", {"x": 1}, [])).fate == "delivered"


async def test_unknown_accounts_and_unlisted_emails_are_dropped_by_the_agents(caches, sent):
    assert (await through("AddEmail", {"account_number": 1500000}, ["Log"])).detail == "no email for account"
    outcome = await through("WhiteList", {"account_number": 1000002, "email": "bob.1000002@example.com"}, ["Log"])
    assert outcome.detail == "email not whitelisted"
    assert sent == []


async def test_a_payload_the_stop_chokes_on_is_dead_lettered(caches, sent):
    outcome = await through("AddEmail", {"no_account": True}, ["Log"])
    assert (outcome.fate, outcome.detail) == ("dead_lettered", "InvalidPayload(account_number)")
    assert sent[0][0] == "Error"
    assert json.loads(sent[0][2])["fields"] == [{"field": "account_number", "problem": "Field required"}]
