"""The dashboard's page, in headless chromium, on the stats view of a bus that retried, compensated and expired.

The page is served and ``stats/`` answered from this process (Playwright's request routing),
with what ``/metrobus/stats/`` gives for outcomes recorded here: no worker, no broker.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from metrobus_app import Settings, create_app
from metrobus_app.web.views import DASHBOARD
from metrobus_app.wire.outcome import Outcome

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"), reason="no chromium")
DELAY = "unit-dash-retry-5s"


def stats_view() -> dict:
    app = create_app(Settings(app_id="unit-dash", store="memory://"))
    stats = app.bus.stats

    def record(stop: str, fate: str, detail: str = "", n: int = 1, **kw) -> None:
        for _ in range(n):
            stats.record(Outcome(stop, fate, detail, received_at=time.time() - 0.002, elapsed=0.002, **kw))

    record("busdriver", "forwarded", "AddEmail", 40)
    record("AddEmail", "retrying", "in place", 4)
    record("AddEmail", "retrying", DELAY, 9)
    record(DELAY, "forwarded", "AddEmail", 6)  # 3 still wait in the delay topic
    record("AddEmail", "forwarded", "Log", 30)
    record("AddEmail", "compensating", "TimeoutError", 5)
    record("busdriver", "compensated", "TimeoutError", 4)
    record("busdriver", "compensation_failed", "CompensationFailed", 1)
    record("Log", "expired", "DeadlinePassed", 2)
    record("Log", "dead_lettered", "KeyError", 1, message="'account'")
    record("Log", "delivered", "", 27)
    return app.watch.stats()


def cells(page, stop: str) -> list[str]:
    return page.locator(f'#stops tr[data-stop="{stop}"] td').all_inner_texts()


def test_the_dashboard_shows_retries_compensations_and_expiry_per_stop_and_what_waits_to_retry():
    from playwright.sync_api import sync_playwright

    body = json.dumps(stats_view())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.route(
                "http://bus.test/metrobus/", lambda route: route.fulfill(body=DASHBOARD, content_type="text/html")
            )
            page.route(
                "http://bus.test/metrobus/stats/",
                lambda route: route.fulfill(body=body, content_type="application/json"),
            )
            page.goto("http://bus.test/metrobus/")
            page.wait_for_selector('#stops tr[data-stop="Log"]', timeout=10_000)
            tiles = page.locator("#tiles").inner_text()
            assert "13\nretries" in tiles
            assert f"3\nwaiting to retry ({DELAY}: 3)" in tiles
            assert "4 + 1 failed\ncompensated" in tiles
            assert "2\nexpired" in tiles
            # the per-stop column, with the breakdown as a tooltip
            add_email = cells(page, "AddEmail")
            assert "↻ 13 retried" in add_email[6] and "5 failed, undoing" in add_email[6]
            title = page.locator('#stops tr[data-stop="AddEmail"] .badge.retry').get_attribute("title")
            assert title == f"in place: 4, {DELAY}: 9"
            assert "4 compensated" in cells(page, "busdriver")[6] and "1 undo failed" in cells(page, "busdriver")[6]
            assert cells(page, "Log")[6] == "2 expired"
            assert cells(page, "Log")[5] == "1"  # dead-lettered, the expired not counted again
            assert cells(page, DELAY)[0] == f"{DELAY} (delay topic: 3 waiting)"
            # the route map: retries in the box, the ends under it; the delay topic is not a stop of the map
            map_text = page.locator("#map svg").text_content()
            assert "↻ 13 retried · 5 undoing" in map_text
            assert "4 compensated" in map_text and "1 undo failed" in map_text and "2 expired" in map_text
            assert DELAY not in map_text
            assert errors == []
        finally:
            browser.close()
