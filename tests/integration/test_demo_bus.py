"""The seed's demo bus, end to end: real broker, real worker, every record accounted for."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from agents.busdriver import DEFAULT_ROUTE, ROUTES
from tables.files import ReadReport, read_emails, read_whitelist

from .conftest import bus_env, make_and_warm, produce, read_topic, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.tansu]

ACCOUNTS, PUSHED = 2000, 1000


def expected_fates(records: list[dict], emails: dict[str, str], whitelisted: set[str]) -> dict[str, set[int]]:
    """Which records (by x) each stop's topic must see, and where each is dropped, from the data alone."""
    seen: dict[str, set[int]] = {"AddEmail": set(), "WhiteList": set(), "Log": set()}
    drops: Counter[str] = Counter()
    for record in records:
        route = ROUTES.get(record["message_type_code"], DEFAULT_ROUTE)
        email = emails.get(str(record["account_number"]))
        for stop in route:
            seen[stop].add(record["x"])
            if stop == "AddEmail" and email is None:
                drops["no email for account"] += 1
                break
            if stop == "WhiteList" and email not in whitelisted:
                drops["email not whitelisted"] += 1
                break
    return {**seen, "drops": drops}  # type: ignore[dict-item]


def xs(records: list) -> list[int]:
    return sorted(json.loads(value)["payload"]["x"] for _, value in records)


def test_every_pushed_record_is_forwarded_to_the_end_or_dropped_for_a_reason(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    data = tmp_path / "data"
    warmed = make_and_warm(env, data, ACCOUNTS, seed=3)
    assert "emails: 1600 added, 0 changed, 0 removed, 0 unchanged; 1600 entries now" in warmed.stdout
    assert "whitelist: 800 added, 0 changed, 0 removed, 0 unchanged; 800 entries now" in warmed.stdout

    worker = workers().wait_ready()
    worker.wait_caches({"emails": 1600, "whitelist": 800})
    assert "+uvloop" in worker.log_text()  # Faust's start-up banner names the event loop (METROBUS_EVENT_LOOP)

    pushed = run_cli(env, "push", "--count", str(PUSHED), "--accounts", str(ACCOUNTS), "--seed", "5")
    assert pushed.returncode == 0, pushed.stderr

    source = [json.loads(value) for _, value in read_topic(broker, "Source", PUSHED, settle=0)]
    assert len(source) == PUSHED
    emails = dict(read_emails(data / "emails.dat", ReadReport(data)))
    whitelisted = {email for email, _ in read_whitelist(data / "whitelist.dat", ReadReport(data))}
    expected = expected_fates(source, emails, whitelisted)
    # The generated data must exercise every fate, or this test proves little.
    assert all(expected[stop] for stop in ("AddEmail", "WhiteList", "Log"))
    assert set(expected["drops"]) == {"no email for account", "email not whitelisted"}

    for stop in ("AddEmail", "WhiteList", "Log"):
        arrived = read_topic(broker, stop, len(expected[stop]))
        assert xs(arrived) == sorted(expected[stop]), stop
    for key, value in read_topic(broker, "Log", len(expected["Log"]), settle=0):
        envelope = json.loads(value)
        assert key == str(envelope["payload"]["account_number"]).encode()
        assert envelope["payload"]["email"] == emails[str(envelope["payload"]["account_number"])]
        assert envelope["header"]["historical_route"] == list(reversed(envelope["header"]["original_route"]))
        assert envelope["header"]["route"] == []
    assert read_topic(broker, "Error", 0, timeout=0, settle=1) == []

    stats = worker.wait_for(
        "/metrobus/stats/", lambda s: s["stops"].get("Log", {}).get("delivered") == len(expected["Log"])
    )
    stops = stats["stops"]
    assert stops["busdriver"]["forwarded_to"] == {"AddEmail": PUSHED}
    assert stops["AddEmail"]["dropped_by_reason"] == {"no email for account": expected["drops"]["no email for account"]}
    assert stops["WhiteList"]["dropped_by_reason"] == {
        "email not whitelisted": expected["drops"]["email not whitelisted"]
    }
    assert stops["Log"]["received"] == stops["Log"]["delivered"] == len(expected["Log"])
    delivered_or_dropped = stops["Log"]["delivered"] + sum(expected["drops"].values())
    assert delivered_or_dropped == PUSHED


def test_the_typed_demo_dead_letters_malformed_records_with_their_fields(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    make_and_warm(env, tmp_path / "data", 200, seed=3)
    worker = workers().wait_ready()
    worker.wait_caches({"emails": 160, "whitelist": 80})
    records = [
        {"x": 1, "message_type_code": "AUDIT", "account_number": 1_000_001},
        {"x": 2, "message_type_code": "ALTABC"},  # no account: AddEmail refuses it, naming the field
        {"x": 3, "message_type_code": "AUDIT", "account_number": "not a number"},  # not a Record: the busdriver
        {"x": 4, "message_type_code": 7, "account_number": 1_000_001},
    ]
    produce(broker, "Source", [(b"k", json.dumps(record).encode()) for record in records])

    letters = {}
    for _, value in read_topic(broker, "Error", 3):
        letter = json.loads(value)
        sent = json.loads(letter["value"])
        letters[sent.get("payload", sent)["x"]] = letter  # an envelope, or the raw record
    assert {x: (letter["stop"], letter["error"]) for x, letter in letters.items()} == {
        2: ("AddEmail", "InvalidPayload"),
        3: ("busdriver", "InvalidPayload"),
        4: ("busdriver", "InvalidPayload"),
    }
    assert [field["field"] for field in letters[2]["fields"]] == ["account_number"]
    assert [field["field"] for field in letters[3]["fields"]] == ["account_number"]
    assert [field["field"] for field in letters[4]["fields"]] == ["message_type_code"]
    assert letters[2]["replayable"]  # a fixed stop may take it again
    [(_, logged)] = read_topic(broker, "Log", 1)
    assert json.loads(logged)["payload"]["x"] == 1
    stats = worker.wait_for("/metrobus/stats/", lambda s: s["stops"]["AddEmail"]["dead_lettered"] == 1)
    assert stats["stops"]["AddEmail"]["dead_lettered_by_error"] == {"InvalidPayload(account_number)": 1}
    assert stats["stops"]["busdriver"]["dead_lettered_by_error"] == {
        "InvalidPayload(account_number)": 1,
        "InvalidPayload(message_type_code)": 1,
    }
    assert "Traceback" not in worker.log_text()
