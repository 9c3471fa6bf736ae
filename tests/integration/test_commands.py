"""The README's commands: the demo runner, and one-line errors for bad input."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from metrobus_app.brokers import free_port

from .conftest import ROOT, bus_env, run_cli

pytestmark = pytest.mark.integration


def run_demo(tmp_path: Path, broker_port: int) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "scripts/demo.py", "--duration", "8", "--accounts", "2000", "--rate", "50"]
    command += ["--broker-port", str(broker_port), "--web-port", str(free_port())]
    command += ["--data-dir", str(tmp_path / "data"), "--state-dir", str(tmp_path / "state")]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_the_demo_runs_says_where_to_look_and_runs_again(tmp_path):
    port = free_port()
    for attempt in ("first", "second"):
        demo = run_demo(tmp_path, port)
        assert demo.returncode == 0, f"{attempt} run:\n{demo.stdout}\n{demo.stderr}"
        assert "The demo bus is running." in demo.stdout
        assert re.search(r"http://127\.0\.0\.1:\d+/metrobus/stats/", demo.stdout)
        assert "Press Ctrl-C to stop" in demo.stdout
        delivered = [int(n) for n in re.findall(r"Log \d+ in, (\d+) delivered", demo.stdout)]
        assert delivered and delivered[-1] > 0, demo.stdout
        assert demo.stdout.rstrip().endswith("demo stopped")
    assert "make-data" not in demo.stdout  # the second run reuses the generated files


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT, ignored when it started"])
def test_the_demo_stops_cleanly_on_a_signal(tmp_path, how):
    command = [sys.executable, "scripts/demo.py", "--accounts", "2000", "--rate", "50"]
    broker_port, web_port = free_port(), free_port()
    command += ["--broker-port", str(broker_port), "--web-port", str(web_port)]
    command += ["--data-dir", str(tmp_path / "data"), "--state-dir", str(tmp_path / "state")]
    ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if how.startswith("SIGINT") else None
    demo = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)
    lines = []
    assert demo.stdout is not None
    for line in demo.stdout:
        lines.append(line)
        if "Press Ctrl-C to stop" in line:
            break
    demo.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
    out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, "".join(lines) + out
    assert out.rstrip().endswith("demo stopped")
    for port in (broker_port, web_port):  # the broker and the worker stopped with it
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["push", "--count", "lots"], "Invalid value for '--count'"),
        (["warm", "--emails", "/no/such/emails.dat"], "does not exist"),
        (["warm"], "name a source"),
        (["make-data", "--email-share", "2"], "Invalid value for '--email-share'"),
        (["push", "--count", "1"], "cannot talk to the broker at kafka://127.0.0.1:"),
    ],
)
def test_bad_input_gets_one_line_and_a_non_zero_exit(tmp_path, args, says):
    env = bus_env_without_broker(tmp_path)
    result = run_cli(env, *args, timeout=60)
    assert result.returncode != 0
    assert says in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bad_setting_gets_one_line(tmp_path):
    env = bus_env_without_broker(tmp_path, METROBUS_PARTITIONS="many")
    result = run_cli(env, "push")
    assert result.returncode != 0
    assert result.stderr.strip() == "metrobus: METROBUS_PARTITIONS='many' is not a whole number"


def bus_env_without_broker(tmp_path: Path, **extra: str) -> dict[str, str]:
    return bus_env(f"kafka://127.0.0.1:{free_port()}", tmp_path / "state", **extra)
