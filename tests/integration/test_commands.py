"""The README's commands: the demo runner (on Tansu and on Apache Kafka), and one-line errors for bad input."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from metrobus_app.brokers import free_port
from metrobus_app.brokers.kafka import KAFKA_VERSION

from .conftest import ROOT, bus_env, run_cli

pytestmark = pytest.mark.integration


STOPS = ("busdriver", "Quota", "AddEmail", "WhiteList", "Log")  # the demo routes ALTDEF records through Quota


def demo_command(tmp_path: Path, broker_port: int, web_port: int, *args: str) -> list[str]:
    command = [sys.executable, "scripts/demo.py", "--accounts", "2000", "--rate", "50", *args]
    command += ["--broker-port", str(broker_port), "--web-port", str(web_port)]
    command += ["--data-dir", str(tmp_path / "data"), "--state-dir", str(tmp_path / "state")]
    return command


@contextmanager
def started_demo(command: list[str], **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """Run the demo in a session of its own (its pid is its process group's id); kill what is left at the end."""
    popen.setdefault("stdout", subprocess.PIPE)
    with subprocess.Popen(command, cwd=ROOT, text=True, start_new_session=True, **popen) as demo:
        try:
            yield demo
        finally:  # also when a test fails: no JVM, worker or pusher of it stays on the machine
            with suppress(ProcessLookupError):
                os.killpg(demo.pid, signal.SIGKILL)


def run_demo(tmp_path: Path, broker_port: int, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the demo for 8 s; also return what of its process group still ran once it exited."""
    command = demo_command(tmp_path, broker_port, free_port(), "--duration", "8", *args)
    with started_demo(command, stderr=subprocess.PIPE) as demo:
        out, err = demo.communicate(timeout=240)
        left = left_behind(demo.pid)
    return subprocess.CompletedProcess(command, demo.returncode, out, err), left


def running_in(group: int) -> list[str]:
    """The command lines of the processes of process group ``group`` (zombies left out)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            _, _, rest = (proc / "stat").read_text().rpartition(")")
            state, _, pgid = rest.split()[:3]
            if int(pgid) == group and state != "Z":
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError):
            continue  # not a process, or gone meanwhile
    return found


def left_behind(group: int, grace: float = 5.0) -> list[str]:
    """What of process group ``group`` still runs after up to ``grace`` s."""
    deadline = time.monotonic() + grace
    while (alive := running_in(group)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def kafka_folder(out: str) -> Path:
    """The data folder the demo's banner names for Apache Kafka."""
    found = re.search(rf"broker \(Apache Kafka {re.escape(KAFKA_VERSION)}, KRaft, data in (\S+)\) listening on", out)
    assert found, out
    return Path(found.group(1))


def test_the_demo_runs_says_where_to_look_and_runs_again(tmp_path):
    port = free_port()
    for attempt in ("first", "second"):
        demo, left = run_demo(tmp_path, port)
        assert demo.returncode == 0, f"{attempt} run:\n{demo.stdout}\n{demo.stderr}"
        assert f"broker (Tansu, in memory) listening on 127.0.0.1:{port}" in demo.stdout
        assert "The demo bus is running." in demo.stdout
        assert re.search(r"http://127\.0\.0\.1:\d+/metrobus/stats/", demo.stdout)
        assert "Press Ctrl-C to stop" in demo.stdout
        delivered = [int(n) for n in re.findall(r"Log \d+ in,[^|]*? (\d+) delivered", demo.stdout)]
        assert delivered and delivered[-1] > 0, demo.stdout
        assert demo.stdout.rstrip().endswith("demo stopped")
        assert left == [], f"{attempt} run left these running: {left}"
    assert "make-data" not in demo.stdout  # the second run reuses the generated files


def test_the_demo_runs_on_apache_kafka_through_every_stop_and_leaves_nothing_running(tmp_path):
    port = free_port()
    demo, left = run_demo(tmp_path, port, "--broker", "kafka")
    assert demo.returncode == 0, f"{demo.stdout}\n{demo.stderr}"
    assert "Traceback" not in demo.stdout + demo.stderr
    folder = kafka_folder(demo.stdout)
    assert f"data in {folder}) listening on 127.0.0.1:{port}" in demo.stdout  # --broker-port holds
    last = [line for line in demo.stdout.splitlines() if re.match(r"\s+\d+ s  ", line)][-1]
    received = dict(re.findall(r"(\w+) (\d+) in", last))
    assert set(received) == set(STOPS) and all(int(n) > 0 for n in received.values()), last
    delivered = re.search(r"Log \d+ in,[^|]*? (\d+) delivered", last)
    assert delivered and int(delivered.group(1)) > 0, last
    assert demo.stdout.rstrip().endswith("demo stopped")
    assert left == [], f"left running: {left}"  # Kafka's JVM, the worker and the pusher included
    assert not folder.exists()
    assert "Kafka Server started" in (tmp_path / "state" / "broker.log").read_text()  # its log kept


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT, ignored when it started", "SIGTERM, on Apache Kafka"])
def test_the_demo_stops_cleanly_on_a_signal(tmp_path, how):
    broker_port, web_port = free_port(), free_port()
    command = demo_command(tmp_path, broker_port, web_port, *(["--broker", "kafka"] if "Kafka" in how else []))
    ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if how.startswith("SIGINT") else None
    lines = []
    with started_demo(command, preexec_fn=ignore_sigint) as demo:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        demo.send_signal(signal.SIGINT if how.startswith("SIGINT") else signal.SIGTERM)
        out, _ = demo.communicate(timeout=60)
        left = left_behind(demo.pid)
    assert demo.returncode == 0, "".join(lines) + out
    assert out.rstrip().endswith("demo stopped")
    assert left == [], f"left running: {left}"
    for port in (broker_port, web_port):  # the broker and the worker stopped with it
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_signal_while_kafka_starts_stops_its_jvm(tmp_path):
    with started_demo(demo_command(tmp_path, free_port(), free_port(), "--broker", "kafka")) as demo:
        deadline = time.monotonic() + 60
        while not any("kafka.Kafka" in command for command in running_in(demo.pid)):  # the JVM is up ...
            assert demo.poll() is None and time.monotonic() < deadline, "Apache Kafka did not start"
            time.sleep(0.05)
        demo.send_signal(signal.SIGTERM)  # ... and the demo still waits for it to answer
        out, _ = demo.communicate(timeout=60)
        left = left_behind(demo.pid)
    assert demo.returncode == 0, out
    assert "The demo bus is running." not in out
    assert out.rstrip().endswith("demo stopped")
    assert left == [], f"left running: {left}"


@pytest.mark.parametrize(
    ("missing", "says"),
    [
        # The first run fetches the jars with Maven; a later one needs only java.
        ("mvn", "Error: Apache Kafka needs 'mvn' on the PATH (apt-get install maven openjdk-17-jdk)"),
        ("java", "Error: Apache Kafka needs 'java' on the PATH (apt-get install openjdk-17-jdk)"),
    ],
)
def test_the_demo_on_kafka_without_java_or_maven_gets_one_line(tmp_path, missing, says):
    home = tmp_path / "kafka-home"
    if missing == "java":
        (home / KAFKA_VERSION / "lib").mkdir(parents=True)
        (home / KAFKA_VERSION / "lib" / ".complete").touch()
    (tmp_path / "bin").mkdir()
    env = {**os.environ, "PATH": str(tmp_path / "bin"), "METROBUS_KAFKA_HOME": str(home)}
    command = demo_command(tmp_path, free_port(), free_port(), "--broker", "kafka")
    demo = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert demo.returncode == 1
    assert demo.stderr.strip().splitlines() == [says]
    assert "Traceback" not in demo.stdout


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
