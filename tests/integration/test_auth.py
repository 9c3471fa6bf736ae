"""The web server's doors, against real workers: the admin token, reads under METROBUS_WEB_AUTH=all,
the body limit, the bind address, and no secret in the worker's log.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from ..blueprint_writes import blueprint_writes
from .conftest import bus_env, run_cli
from .test_dashboard import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.integration

TOKEN = "tok-" + secrets.token_urlsafe(24)
REDIS_PASSWORD = "redis-" + secrets.token_hex(12)
SASL_PASSWORD = "sasl-" + secrets.token_hex(12)
AUDIT = {"name": "audit", "match": {"message_type_code": "AUDIT"}, "route": ["AddEmail", "Log"]}
RULES = {"default": ["AddEmail", "WhiteList", "Log"], "rules": [AUDIT]}


def call(port: int, method: str, path: str, body: object = None, token: str | None = None, raw: bytes | None = None):
    """(status, JSON answer or text) of one request to the worker."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def write_requests() -> list[tuple[str, str]]:
    """(method, path) of every write handler of metrobus's blueprints, with its placeholders filled in."""
    filled = {"{name}": "audit", "{message_id}": "x", "{key}": "k"}
    requests = []
    for method, path in blueprint_writes():
        for placeholder, value in filled.items():
            path = path.replace(placeholder, value)
        requests.append((method, path))
    return requests


def listening_addresses(port: int) -> set[str]:
    """The local addresses something listens on at ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is little-endian
            found.add(socket.inet_ntop(family, raw))
    return found


def test_write_views_need_the_token_and_secrets_stay_out_of_the_log(broker, workers, tmp_path):
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0"
    locked = workers("locked", METROBUS_ADMIN_TOKEN=TOKEN, METROBUS_REDIS_URL=redis_url, METROBUS_APP_ID="locked")
    closed = workers("closed", METROBUS_APP_ID="closed")  # no token at all
    locked.wait_ready()
    closed.wait_ready()
    port = locked.port

    # Bound to the loopback interface only (the default METROBUS_WEB_BIND).
    assert listening_addresses(port) == {"127.0.0.1"}, listening_addresses(port)

    # Every write handler of every blueprint: no token 401, a wrong one 403, and nothing changes.
    writes = write_requests()
    assert {m for m, _ in writes} == {"PUT", "POST", "DELETE"} and len(writes) == 5, writes
    for method, path in writes:
        status, answer = call(port, method, path, {"route": ["Log"]})
        assert status == 401 and "Bearer" in answer["error"], (method, path, status, answer)
        status, answer = call(port, method, path, {"route": ["Log"]}, token="wrong-" + TOKEN)
        assert status == 403 and answer == {"error": "wrong admin token"}, (method, path, status, answer)
        status, answer = call(closed.port, method, path, {"route": ["Log"]}, token=TOKEN)
        assert status == 403 and "METROBUS_ADMIN_TOKEN" in answer["error"], (method, path, status, answer)
    # Faust's own views are behind the same guard (any method but GET/HEAD/OPTIONS, any path).
    assert call(port, "POST", "/router/", {})[0] == 401
    assert call(port, "GET", "/metrobus/routes/")[1]["source"] == "file"

    # The right token: each write view does its job.
    assert call(port, "PUT", "/metrobus/routes/", RULES, token=TOKEN)[0] == 200
    rule = {"name": "big", "match": {"amount": {"min": 1000}}, "route": ["AddEmail", "Log"]}
    status, answer = call(port, "POST", "/metrobus/routes/", rule, token=TOKEN)
    assert status == 201 and [r["name"] for r in answer["rules"]] == ["audit", "big"], answer
    status, answer = call(port, "PUT", "/metrobus/routes/big", {**rule, "route": ["Log"]}, token=TOKEN)
    assert status == 200 and answer["rules"][1]["route"] == ["Log"], answer
    assert call(port, "PUT", "/metrobus/routes/default", {"route": ["AddEmail", "Log"]}, token=TOKEN)[0] == 200
    status, answer = call(port, "DELETE", "/metrobus/routes/big", token=TOKEN)
    assert status == 200 and [r["name"] for r in answer["rules"]] == ["audit"], answer
    assert call(port, "DELETE", "/metrobus/routes/", token=TOKEN)[0] == 200
    assert call(port, "GET", "/metrobus/routes/")[1]["source"] == "file"  # reads stay open by default

    # Validated: a rule set that is not what the schema says is a 400 naming the field; nothing changes.
    status, answer = call(port, "POST", "/metrobus/routes/", {"name": "bad", "match": {}, "route": "Log"}, token=TOKEN)
    assert status == 400 and "route" in answer["error"], answer
    status, answer = call(port, "PUT", "/metrobus/routes/", raw=b"{not json", token=TOKEN)
    assert status == 400 and "not JSON" in answer["error"], answer
    # Bounded: a body above METROBUS_WEB_MAX_BODY_BYTES (64 KiB) is refused, as JSON.
    huge = {"default": ["Log"], "rules": [], "description": "x" * 70_000}
    status, answer = call(port, "PUT", "/metrobus/routes/", huge, token=TOKEN)
    assert status == 413 and "65536" in answer["error"], (status, answer)
    assert call(port, "PUT", "/metrobus/routes/", huge)[0] == 401  # and nobody gets that far without the token
    # An error body never echoes the request as HTML.
    status, answer = call(port, "PUT", "/metrobus/routes/%3Cb%3Ex", {"route": ["<b>"]}, token=TOKEN)
    assert status == 400 and isinstance(answer, dict), answer
    status, answer = call(port, "GET", "/metrobus/<script>x</script>")
    assert status == 404 and answer == {"error": "Not Found"}, answer

    # A run: some records, then the full log.
    env = bus_env(broker.url, tmp_path / "cli", METROBUS_APP_ID="locked")
    assert run_cli(env, "push", "--count", "20", "--accounts", "10", "--seed", "1").returncode == 0
    locked.wait_for("/metrobus/stats/", lambda s: s["stops"].get("busdriver", {}).get("received") == 20, timeout=30)
    # A SASL password with PLAINTEXT is refused in one line that names the variable, never the password.
    sasl = run_cli({**env, "METROBUS_SASL_USERNAME": "bus", "METROBUS_SASL_PASSWORD": SASL_PASSWORD}, "routes", "list")
    assert sasl.returncode != 0 and "METROBUS_SASL_PASSWORD" in sasl.stderr + sasl.stdout
    assert SASL_PASSWORD not in sasl.stderr + sasl.stdout
    # The settings command shows neither the token nor the Redis password.
    shown = run_cli({**env, "METROBUS_ADMIN_TOKEN": TOKEN, "METROBUS_REDIS_URL": redis_url}, "settings")
    assert shown.returncode == 0 and "redis://:***@127.0.0.1:1/0" in shown.stdout, shown.stdout + shown.stderr
    assert TOKEN not in shown.stdout + shown.stderr and REDIS_PASSWORD not in shown.stdout + shown.stderr
    # A warm from a Redis that does not answer names it without its password.
    warm = run_cli({**env, "METROBUS_REDIS_URL": redis_url}, "warm", "--emails-hash", "emails")
    assert warm.returncode != 0 and "redis://:***@127.0.0.1:1/0" in warm.stderr, warm.stdout + warm.stderr
    assert REDIS_PASSWORD not in warm.stdout + warm.stderr
    locked.stop()
    closed.stop()
    log = locked.log_text()
    assert "refused PUT '/metrobus/routes/' from 127.0.0.1: wrong admin token" in log, log[-3000:]
    assert "refused POST '/metrobus/routes/' from 127.0.0.1: this needs the admin token" in log
    assert "Ready" in log and "busdriver" in log  # the banner and the run are in it
    for secret in (TOKEN, REDIS_PASSWORD):
        assert secret not in log, f"a secret in the worker's log at {log.index(secret)}"
    closed_log = closed.log_text()
    assert "write actions are DISABLED (no admin token configured)" in closed_log
    assert "refused PUT '/metrobus/routes/' from 127.0.0.1: write actions are disabled" in closed_log


def test_web_auth_all_protects_reads_and_the_dashboard_asks_for_the_token(broker, workers, tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    worker = workers(METROBUS_WEB_AUTH="all", METROBUS_ADMIN_TOKEN_FILE=str(token_file)).wait_ready()
    port = worker.port
    reads = ["/metrobus/stats/", "/metrobus/caches/", "/metrobus/caches/emails/1", "/metrobus/messages/x"]
    reads += ["/metrobus/metrics", "/metrobus/routes/", "/metrobus/routes/default", "/router/"]
    for path in reads:
        status, answer = call(port, "GET", path)
        assert status == 401 and "Bearer" in answer["error"], (path, status, answer)
        assert call(port, "GET", path, token="wrong-" + TOKEN)[0] == 403, path
        assert call(port, "GET", path, token=TOKEN)[0] in (200, 404), path  # 404: an unknown message
    assert call(port, "GET", "/metrobus/stats/", token=TOKEN)[0] == 200
    assert call(port, "PUT", "/metrobus/routes/default", {"route": ["Log"]})[0] == 401
    assert call(port, "PUT", "/metrobus/routes/default", {"route": ["AddEmail", "Log"]}, token=TOKEN)[0] == 200
    # The dashboard page itself is static (no data): it loads, then asks for the token once.
    status, page = call(port, "GET", "/metrobus/")
    assert status == 200 and 'id="login"' in page

    assert Path(CHROMIUM).exists() or shutil.which("chromium"), "chromium is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/metrobus/")
            page.wait_for_selector("#login:not([hidden])", timeout=10_000)
            assert "admin token" in page.locator("#status").text_content()
            page.fill("#token", "wrong-" + TOKEN)
            page.click("#login button")
            page.wait_for_function("document.getElementById('status').textContent.includes('wrong admin token')")
            page.fill("#token", TOKEN)
            page.click("#login button")
            page.wait_for_function("document.getElementById('worker').textContent.includes('(')", timeout=10_000)
            assert page.locator("#login").is_hidden()
            assert page.evaluate("sessionStorage.getItem('metrobus-admin-token')") == TOKEN
            page.reload()  # asked once: the tab keeps it
            page.wait_for_function("document.getElementById('worker').textContent.includes('(')", timeout=10_000)
            assert page.locator("#login").is_hidden()
        finally:
            browser.close()
    worker.stop()
    assert TOKEN not in worker.log_text()
