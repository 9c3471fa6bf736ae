"""The dashboard at /metrobus/ in a real headless browser (Debian's chromium, driven by Playwright).

After a run of records it must show the stops with non-zero counts and the route map, update
by itself, and show a dead letter whose payload and error carry HTML as text: nothing from
the bus may run as script. A screenshot goes to ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from metrobus_app import Envelope

from .conftest import ROOT, bus_env, produce, read_topic, run_cli

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
ACCOUNTS, PUSHED = 500, 300


def test_the_dashboard_shows_the_bus_and_keeps_html_from_the_bus_as_text(broker, workers, tmp_path):
    assert Path(CHROMIUM).exists() or shutil.which("chromium"), "chromium is missing: apt-get install chromium"

    env = bus_env(broker.url, tmp_path / "cli")
    data = tmp_path / "data"
    assert run_cli(env, "make-data", "--out", str(data), "--accounts", str(ACCOUNTS), "--seed", "3").returncode == 0
    warm = run_cli(env, "warm", "--emails", str(data / "emails.dat"), "--whitelist", str(data / "whitelist.dat"))
    assert warm.returncode == 0, warm.stderr
    worker = workers().wait_ready()
    worker.wait_caches({"emails": 400, "whitelist": 200})
    pushed = run_cli(env, "push", "--count", str(PUSHED), "--accounts", str(ACCOUNTS), "--seed", "5")
    assert pushed.returncode == 0, pushed.stderr
    # A message whose payload and next stop are HTML: it is dead-lettered (no such stop) at Log.
    hostile = Envelope.stamp({"note": SCRIPT}, ["Log", IMG])
    hostile.pop_next()
    produce(broker, "Log", [(b"hostile", hostile.to_bytes())])
    at_log = len(read_topic(broker, "Log", 1, settle=2))
    worker.wait_for("/metrobus/stats/", lambda s: s["stops"].get("Log", {}).get("received") == at_log, timeout=30)

    ARTIFACTS.mkdir(exist_ok=True)
    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{worker.port}/metrobus/")

            # Every stop has a row with non-zero counts.
            page.wait_for_selector('#stops tr[data-stop="Log"]', timeout=10_000)
            for stop in ("busdriver", "AddEmail", "WhiteList", "Log"):
                cells = page.locator(f'#stops tr[data-stop="{stop}"] td').all_inner_texts()
                assert cells[0] == stop
                assert int(cells[1].replace(",", "")) > 0, (stop, cells)
            busdriver = page.locator('#stops tr[data-stop="busdriver"] td').all_inner_texts()
            assert int(busdriver[1].replace(",", "")) == PUSHED
            # The route map: every stop, the sinks, and counts on the arrows.
            map_text = page.locator("#map svg").text_content()
            for name in ("busdriver", "AddEmail", "WhiteList", "Log", "delivered", "dropped", "dead-lettered"):
                assert name in map_text, name
            assert f"{PUSHED:,}" in page.locator("#map svg text.count").all_text_contents()
            assert "no email for account" in page.locator("#drops").inner_text()

            # The dead letter's HTML is shown as text, and none of it became an element or ran.
            letters = page.locator("#dead-letters")
            letters.get_by_text(SCRIPT).wait_for(timeout=10_000)
            assert SCRIPT in letters.inner_text()
            assert IMG in letters.inner_text()
            assert page.locator("#dead-letters script, #dead-letters img").count() == 0
            assert page.locator("body script").count() == 1  # the page's own

            # It updates by itself.
            updated = page.locator("#updated").inner_text()
            page.wait_for_function(
                "before => document.getElementById('updated').textContent !== before", arg=updated, timeout=10_000
            )

            # A dead letter's id finds the message: where it ended and why.
            letters.locator("a.id").first.click()
            page.locator("#message strong").wait_for(timeout=10_000)
            where = page.locator("#message strong").inner_text()
            assert where.startswith("dead-lettered at Log: UnknownStop"), where
            assert IMG in where
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert dialogs == [], dialogs
            assert errors == [], errors
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
