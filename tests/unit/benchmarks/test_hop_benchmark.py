"""The broker-less benchmark of the bus's own code runs and writes its figures (values of time are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_quick_run_handles_every_hop_and_writes_its_json(tmp_path):
    out = tmp_path / "hop.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hop_benchmark.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"kind", "time", "git_commit", "settings", "machine", "rounds", "cpu_us_per_record"} <= set(report)
    assert report["settings"]["records"] == 2000 and len(report["rounds"]) == 2
    for result in report["rounds"]:
        handled = result["handled"]
        assert handled["Source"] == 2000
        # Every route of the demo starts at AddEmail; some records are dropped on the way, none doubled.
        assert handled["AddEmail"] == 2000
        assert 0 < handled["WhiteList"] < 2000 and 0 < handled["Log"] < 2000
        assert result["cpu_us_per_record"] > 0
    assert "best" in done.stdout and str(out) in done.stdout
