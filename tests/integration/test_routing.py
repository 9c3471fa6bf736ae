"""Routing on real workers: rules changed while they run (CLI and web view), fan-out, a detour,
a 0.0.x stop before a fan-out step, and a worker that runs one stop beside one that runs the rest."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from tables.files import ReadReport, read_emails, read_whitelist

from .conftest import Worker, bus_env, produce, read_topic, run_0_0_x_stop, run_cli

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "routing-tests-admin-token"  # the web view's writes need it (see test_auth.py)
EXTRA = {"METROBUS_MODULES": "agents,tests.integration.extra_stops", "METROBUS_ADMIN_TOKEN": ADMIN_TOKEN}


def call(worker: Worker, method: str, path: str, body: object = None) -> tuple[int, dict]:
    """An HTTP request to the worker's web view: (status, JSON answer)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if "METROBUS_ADMIN_TOKEN" in worker.env:
        request.add_header("Authorization", f"Bearer {worker.env['METROBUS_ADMIN_TOKEN']}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_revision(worker: Worker, revision: int, timeout: float = 5) -> float:
    """Seconds until ``worker`` routes by stored revision ``revision`` (fails after ``timeout``)."""
    started = time.monotonic()
    worker.wait_for("/metrobus/routes/", lambda view: view.get("revision") == revision, timeout)
    return time.monotonic() - started


def send(broker, records: list[dict]) -> None:
    produce(broker, "Source", [(str(r["n"]).encode(), json.dumps(r).encode()) for r in records])


def arrived(broker, topic: str, expect: int) -> list[dict]:
    return [json.loads(value) for _, value in read_topic(broker, topic, expect)]


def by_n(envelopes: list[dict]) -> dict[int, dict]:
    return {envelope["payload"]["n"]: envelope for envelope in envelopes}


def test_a_rule_changed_by_the_cli_or_the_web_view_routes_the_next_records(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli", **EXTRA)
    worker = workers(**EXTRA).wait_ready()
    assert worker.get("/metrobus/routes/")["source"] == "file"

    changed = run_cli(env, "routes", "default", "Tag,SinkA")
    assert changed.returncode == 0, changed.stderr
    assert "revision 1" in changed.stdout
    assert wait_revision(worker, 1) < 5
    send(broker, [{"n": n, "amount": 5} for n in range(3)])
    assert sorted(by_n(arrived(broker, "SinkA", 3))) == [0, 1, 2]

    refused = run_cli(env, "routes", "set", "bad", "--when", "kind=x", "--route", "Tag,Nowhere")
    assert refused.returncode == 1
    assert "Error: rule 'bad': route names unknown stop 'Nowhere' (known: AddEmail, Fraud, Log," in refused.stderr
    assert "Traceback" not in refused.stderr

    status, view = call(
        worker, "POST", "/metrobus/routes/", {"name": "big", "match": {"amount": {"min": 100}}, "route": ["SinkB"]}
    )
    assert status == 201, view
    assert view["revision"] == 2 and [r["name"] for r in view["rules"]] == ["audit", "big"]
    send(broker, [{"n": 10, "amount": 500}, {"n": 11, "amount": 5}])
    assert sorted(by_n(arrived(broker, "SinkB", 1))) == [10]
    assert sorted(by_n(arrived(broker, "SinkA", 4))) == [0, 1, 2, 11]

    assert call(worker, "PUT", "/metrobus/routes/big", {"match": {"amount": {"gte": 1}}, "route": ["SinkB"]}) == (
        400,
        {"error": "rule 'big': match.amount: unknown condition 'gte' (use equals, in, exists, min, max)"},
    )
    assert call(worker, "PUT", "/metrobus/routes/default", {"route": []}) == (
        400,
        {"error": "the default route: route is empty"},
    )
    assert call(worker, "DELETE", "/metrobus/routes/nope")[0] == 404
    assert call(worker, "POST", "/metrobus/routes/", {"name": "big", "match": {"x": 1}, "route": ["Log"]})[0] == 409
    assert worker.get("/metrobus/routes/")["revision"] == 2  # nothing refused was written

    listed = run_cli(env, "routes", "list")
    assert "route rules stored in the bus, revision 2 (by web" in listed.stdout
    assert "big      amount >= 100 -> SinkB" in listed.stdout
    assert run_cli(env, "routes", "match", '{"amount": 500}').stdout.strip() == "big -> SinkB"

    assert run_cli(env, "routes", "reset").returncode == 0
    worker.wait_for("/metrobus/routes/", lambda view: view["source"] == "file", 5)


def test_fan_out_to_two_sinks_a_detour_and_a_0_0_x_stop_before_a_fan_out(broker, workers, tmp_path):
    extra = {**EXTRA, "METROBUS_EXTERNAL_STOPS": "Legacy"}
    env = bus_env(broker.url, tmp_path / "cli", **extra)
    rules = tmp_path / "fanout.toml"
    rules.write_text(
        'default = ["Fraud", "Tag", "SinkA+SinkB"]\n\n'
        '[[rules]]\nname = "legacy"\nmatch = { kind = "legacy" }\nroute = ["Legacy", "SinkA+SinkB"]\n'
    )
    worker = workers(**extra).wait_ready()
    loaded = run_cli(env, "routes", "load", str(rules))
    assert loaded.returncode == 0, loaded.stderr
    wait_revision(worker, 1)

    stop = threading.Event()
    legacy = threading.Thread(target=run_0_0_x_stop, args=(broker.bootstrap, "Legacy", stop), daemon=True)
    legacy.start()
    try:
        send(broker, [{"n": n, "amount": 500 if n % 2 else 5} for n in range(6)] + [{"n": 50, "kind": "legacy"}])
        at_a, at_b = by_n(arrived(broker, "SinkA", 7)), by_n(arrived(broker, "SinkB", 7))
    finally:
        stop.set()
        legacy.join(timeout=10)

    assert sorted(at_a) == sorted(at_b) == [0, 1, 2, 3, 4, 5, 50]  # every record, once at each sink
    for n in range(6):
        a, b = at_a[n]["header"], at_b[n]["header"]
        assert (a["copy"], b["copy"]) == ("1", "2")
        assert a["id"] == b["id"]
        detour = ["Review"] if n % 2 else []
        assert a["historical_route"] == ["Fraud", *detour, "Tag", "SinkA"]
        assert b["historical_route"] == ["Fraud", *detour, "Tag", "SinkB"]
        assert a["route"] == b["route"] == []
        assert at_b[n]["payload"]["tagged"] is True
        assert at_a[n]["payload"].get("reviewed", False) is bool(n % 2)
        if n % 2:
            assert [(e["stop"], e["edit"], e["steps"]) for e in a["route_edits"]] == [("Fraud", "detour", ["Review"])]
        else:
            assert "route_edits" not in a
        assert [hop["stop"] for hop in a["hops"]] == ["busdriver", "Fraud", *detour, "Tag"]
    # The 0.0.x stop sent the message to SinkA only (fan-out still pending); SinkA sent SinkB its copy.
    legacy_a, legacy_b = at_a[50]["header"], at_b[50]["header"]
    assert "copy" not in legacy_a and legacy_a["fanout"] == {"0": ["SinkA", "SinkB"]}
    assert legacy_b["copy"] == "2"
    assert legacy_a["historical_route"] == ["Legacy", "SinkA"]
    assert legacy_b["historical_route"] == ["Legacy", "SinkB"]
    assert "fanout" not in legacy_b

    stats = worker.wait_for("/metrobus/stats/", lambda s: s["stops"].get("SinkB", {}).get("delivered") == 7)["stops"]
    assert stats["Tag"]["forwarded_to"] == {"SinkA+SinkB": 6}
    assert stats["SinkA"]["delivered"] == 7
    assert stats["Fraud"]["forwarded_to"] == {"Review": 3, "Tag": 3}
    assert read_topic(broker, "Error", 0, timeout=0, settle=1) == []


def test_a_worker_running_one_stop_beside_one_running_the_others(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    data = tmp_path / "data"
    assert run_cli(env, "make-data", "--out", str(data), "--accounts", "400", "--seed", "4").returncode == 0
    warmed = run_cli(env, "warm", "--emails", str(data / "emails.dat"), "--whitelist", str(data / "whitelist.dat"))
    assert warmed.returncode == 0, warmed.stderr
    main = workers("main", METROBUS_STOPS="busdriver,AddEmail,Log")
    white = workers("white", METROBUS_STOPS="WhiteList", METROBUS_ADMIN_TOKEN=ADMIN_TOKEN)
    for worker in (main, white):
        worker.wait_ready()
        worker.wait_caches({"emails": 320, "whitelist": 160})

    pushed = run_cli(env, "push", "--count", "200", "--accounts", "400", "--seed", "8")
    assert pushed.returncode == 0, pushed.stderr
    source = [json.loads(value) for _, value in read_topic(broker, "Source", 200, settle=0)]
    emails = dict(read_emails(data / "emails.dat", ReadReport(data)))
    whitelist = {email for email, _ in read_whitelist(data / "whitelist.dat", ReadReport(data))}
    with_email = [r for r in source if str(r["account_number"]) in emails]
    to_whitelist = [r for r in with_email if r["message_type_code"] != "AUDIT"]
    delivered = [
        r for r in with_email if r["message_type_code"] == "AUDIT" or emails[str(r["account_number"])] in whitelist
    ]
    at_log = read_topic(broker, "Log", len(delivered))
    assert sorted(json.loads(v)["payload"]["x"] for _, v in at_log) == sorted(r["x"] for r in delivered)

    # Each stop ran where it was told to: WhiteList only on "white", everything else only on "main".
    main_stats = main.wait_for(
        "/metrobus/stats/", lambda s: s["stops"].get("Log", {}).get("delivered") == len(delivered)
    )
    white_stats = white.get("/metrobus/stats/")
    assert set(main_stats["stops"]) == {"busdriver", "AddEmail", "Log"}
    assert set(white_stats["stops"]) == {"WhiteList"}
    assert white_stats["stops"]["WhiteList"]["received"] == len(to_whitelist)

    # The rules are the bus's, not a worker's: a change made on "white" (which has no busdriver)
    # routes the next records on "main".
    status, view = call(white, "PUT", "/metrobus/routes/default", {"route": ["Log"]})
    assert status == 200 and view["default"] == ["Log"]
    assert wait_revision(main, view["revision"]) < 5
    produce(broker, "Source", [(b"1", json.dumps({"x": 9000 + n, "account_number": 1}).encode()) for n in range(5)])
    newest = [json.loads(v)["payload"]["x"] for _, v in read_topic(broker, "Log", len(delivered) + 5)]
    assert sorted(x for x in newest if x >= 9000) == [9000, 9001, 9002, 9003, 9004]
