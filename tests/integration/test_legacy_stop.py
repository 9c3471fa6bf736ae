"""A stop written against metrobus 0.0.x (a plain Kafka client) sits in the middle of our route."""

from __future__ import annotations

import json
import threading

import pytest

from tables.files import ReadReport, read_emails, read_whitelist

from .conftest import bus_env, read_topic, run_0_0_x_stop, run_cli

pytestmark = pytest.mark.integration


def whitelisting(whitelist: set[str]):  # type: ignore[no-untyped-def]
    """The seed's whitelist callback: mark the message, or drop it (None)."""

    def work(message: dict) -> dict | None:
        if message["payload"]["email"] not in whitelist:
            return None
        message["payload"]["whitelist"] = True
        return message

    return work


def test_a_0_0_x_stop_replaces_whitelist_between_our_stops(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    data = tmp_path / "data"
    assert run_cli(env, "make-data", "--out", str(data), "--accounts", "500", "--seed", "9").returncode == 0
    assert run_cli(env, "warm", "--emails", str(data / "emails.dat")).returncode == 0
    worker = workers(METROBUS_STOPS="busdriver,AddEmail,Log").wait_ready()
    worker.wait_caches({"emails": 400, "whitelist": 0})
    assert "metrobus.WhiteList" not in worker.log_text()

    whitelist = {email for email, _ in read_whitelist(data / "whitelist.dat", ReadReport(data))}
    stop = threading.Event()
    legacy = threading.Thread(
        target=run_0_0_x_stop, args=(broker.bootstrap, "WhiteList", stop, whitelisting(whitelist)), daemon=True
    )
    legacy.start()
    try:
        assert run_cli(env, "push", "--count", "300", "--accounts", "500", "--seed", "2").returncode == 0
        source = [json.loads(value) for _, value in read_topic(broker, "Source", 300, settle=0)]
        emails = dict(read_emails(data / "emails.dat", ReadReport(data)))
        expected = sorted(
            r["x"]
            for r in source
            if str(r["account_number"]) in emails
            and (r["message_type_code"] == "AUDIT" or emails[str(r["account_number"])] in whitelist)
        )
        delivered = read_topic(broker, "Log", len(expected))
    finally:
        stop.set()
        legacy.join(timeout=10)

    assert sorted(json.loads(value)["payload"]["x"] for _, value in delivered) == expected
    through_legacy = [json.loads(v) for _, v in delivered if json.loads(v)["payload"].get("whitelist")]
    assert through_legacy
    for envelope in through_legacy:
        assert envelope["header"]["historical_route"] == ["AddEmail", "WhiteList", "Log"]
    stats = worker.wait_for("/metrobus/stats/", lambda s: s["stops"].get("Log", {}).get("delivered") == len(expected))
    assert "WhiteList" not in stats["stops"]
