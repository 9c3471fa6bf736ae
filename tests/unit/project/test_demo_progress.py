"""The demo's cache-loading progress: one updating line on a terminal, separate lines in a log."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def demo():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(demo, capsys, *, tty: bool) -> list[str]:  # type: ignore[no-untyped-def]
    """Show 100 polls, 1 s apart, of two caches loading 10 entries a poll each, then done."""
    now = [0.0]
    want = {"emails": 1000, "whitelist": 1000}
    progress = demo.CacheProgress(want, tty=tty, clock=lambda: now[0])
    for i in range(100):
        progress.show({"emails": 10 * i, "whitelist": 10 * i})
        now[0] += 1.0
    progress.done(want)
    return capsys.readouterr().out


def test_not_on_a_terminal_the_progress_is_separate_lines_at_a_modest_rate(demo, capsys):
    out = _load(demo, capsys, tty=False)
    assert "\r" not in out
    lines = out.splitlines()
    assert 10 <= len(lines) <= 22  # every 10 % or 5 s (100 polls: 20 lines at most), not one a poll
    want = "want {'emails': 1000, 'whitelist': 1000}"
    assert lines[0] == "  caches: {'emails': 0, 'whitelist': 0}, " + want + " (0%)"
    assert lines[-1] == "  caches: {'emails': 1000, 'whitelist': 1000}, " + want + ": loaded"


def test_on_a_terminal_the_progress_is_one_line_that_updates(demo, capsys):
    out = _load(demo, capsys, tty=True)
    assert out.count("\n") == 1 and out.endswith("   \n")
    assert out.count("\r") == 101


def test_waiting_for_the_caches_in_a_log_prints_lines_not_carriage_returns(demo, capsys, monkeypatch, tmp_path):
    answers = iter([{"emails": {"entries": n, "ready": n == 50}} for n in range(51)])
    monkeypatch.setattr(demo, "get_json", lambda url: next(answers))
    monkeypatch.setattr(demo.time, "sleep", lambda s: None)

    class Running:
        def poll(self) -> None:
            return None

    demo.wait_for_caches(Running(), "http://worker/metrobus/", tmp_path / "log", {"emails": 50})
    out = capsys.readouterr().out
    assert "\r" not in out and out.endswith("  caches: {'emails': 50}, want {'emails': 50}: loaded\n")
    assert 2 <= len(out.splitlines()) <= 12  # every 10 %, not each of the 51 polls
