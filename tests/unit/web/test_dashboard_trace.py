"""The dashboard, in headless chromium, shows the trace id of a traced message, its copies and its dead letter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metrobus_app.web.views import DASHBOARD

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"), reason="no chromium")
TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER = "4bf92f3577b34da6a3ce929d0e0e4736"
LETTERS = [
    {
        "time": 1,
        "stop": "A",
        "fate": "dead_lettered",
        "error": "KeyError",
        "message": "'email'",
        "id": "traced",
        "trace_id": TRACE,
        "payload": "{}",
    },
    {
        "time": 1,
        "stop": "A",
        "fate": "dead_lettered",
        "error": "KeyError",
        "message": "'email'",
        "id": "plain",
        "trace_id": None,
        "payload": "{}",
    },
]
STATS = {
    "worker_id": "w1",
    "worker": "w1",
    "time": 0,
    "stops": {},
    "bus": {"e2e_ms": {"count": 0}, "e2e_ms_last_minute": {"count": 0}},
    "dead_letters": LETTERS,
    "cluster": {
        "workers": {},
        "stops": {},
        "dead_letters": LETTERS,
        "bus": {"e2e_ms": {"count": 0}, "e2e_ms_last_minute": {"count": 0}},
    },
}


def hop(stop: str, trace: str | None) -> dict:
    return {"stop": stop, "received": 1.0, "forwarded": 1.001, "worker": "w1", **({"trace_id": trace} if trace else {})}


FATES = {
    "traced": {
        "id": "traced",
        "found": True,
        "status": "delivered",
        "stop": "B",
        "where": "delivered: its route ended at B",
        "hops": [hop("busdriver", TRACE), hop("A", TRACE)],
        "trace_id": TRACE,
    },
    "fanned": {
        "id": "fanned",
        "found": True,
        "status": "copied",
        "stop": None,
        "where": "copied",
        "hops": [],
        "trace_id": TRACE,
        "copies": [
            {"copy": "1", "status": "delivered", "stop": "B", "hops": [hop("A", TRACE)], "trace_id": TRACE},
            {"copy": "2", "status": "delivered", "stop": "C", "hops": [hop("A", OTHER)], "trace_id": OTHER},
        ],
    },
    "plain": {
        "id": "plain",
        "found": True,
        "status": "delivered",
        "stop": "B",
        "where": "delivered",
        "hops": [hop("A", None)],
    },
}


def test_the_message_view_shows_the_trace_id_and_a_copys_own_when_it_differs():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.route("http://bus.test/metrobus/", lambda r: r.fulfill(body=DASHBOARD, content_type="text/html"))
            page.route(
                "http://bus.test/metrobus/stats/",
                lambda r: r.fulfill(body=json.dumps(STATS), content_type="application/json"),
            )
            page.route(
                "http://bus.test/metrobus/messages/*",
                lambda r: r.fulfill(
                    body=json.dumps(FATES[r.request.url.rsplit("/", 1)[1]]), content_type="application/json"
                ),
            )
            page.goto("http://bus.test/metrobus/")
            page.wait_for_selector("#dead-letters table", timeout=10_000)
            letters = page.locator("#dead-letters tbody tr").all_inner_texts()
            assert f"trace {TRACE}" in letters[0] and "trace" not in letters[1], letters

            def find(message_id: str) -> str:
                page.evaluate("document.getElementById('message').replaceChildren()")
                page.fill("#message-id", message_id)
                page.click("#find button")
                page.wait_for_selector("#message p.mono", timeout=10_000)
                return page.locator("#message").inner_text()

            assert f"trace {TRACE}" in find("traced")
            assert page.locator("#message p.trace").get_attribute("title") == "OpenTelemetry trace id"
            fanned = find("fanned")
            assert f"trace {TRACE}" in fanned
            lines = fanned.splitlines()
            [copy1] = [line for line in lines if line.startswith("copy 1:")]
            [copy2] = [line for line in lines if line.startswith("copy 2:")]
            assert copy2.endswith(f"· trace {OTHER}")
            assert "trace" not in copy1  # the message's own: not said again
            plain = find("plain")
            assert "trace" not in plain
            assert errors == []
        finally:
            browser.close()
