"""The benchmark of issue 7 runs end to end and writes every figure (values of time are not checked).

It runs on the broker the integration run tests on (METROBUS_TEST_BROKER: Tansu, or Apache Kafka).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metrobus_app.brokers.kafka import KAFKA_VERSION

from .conftest import TEST_BROKER

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

LATENCY = {"p50", "p99", "max", "mean"}
BURST = {
    "pushed",
    "expected",
    "delivered",
    "complete",
    "push_seconds",
    "seconds",
    "throughput_rps",
    "delivered_rps",
    "latency_ms",
    "cpu_ms_per_record",
    "machine",
}
PACED = {"pushed", "rate", "achieved_rate", "expected", "delivered", "complete", "latency_ms", "machine"}
PHASE_MACHINE = {
    "wall_seconds",
    "machine_busy_cpu_seconds",
    "benchmark_cpu_seconds",
    "foreign_cpu_seconds",
    "foreign_cpu_share",
}
PROCESS = {"name", "pid", "cpu_seconds", "peak_rss_mb", "rss_mb"}
CPU = {"burst", "paced", "total"}
SCENARIO = {
    "name",
    "kind",
    "workers",
    "partitions",
    "repeat",
    "error",
    "setup_seconds",
    "scenario_seconds",
    "burst",
    "paced",
    "duplicates_on_log",
    "unreadable_on_log",
    "processes",
    "broker",
}
RATIOS = {
    "burst_throughput",
    "burst_p50",
    "burst_p99",
    "paced_p50",
    "paced_p99",
    "paced_max",
    "burst_cpu_per_record",
}
SETTINGS = {
    "count",
    "rate",
    "paced_seconds",
    "accounts",
    "workers",
    "partitions",
    "METROBUS_FETCH_WAIT_MS",
    "warmup_records",
    "warmup_seconds",
}
BROKER = {"kind", "version", "jvm"}
MACHINE = {"nproc", "python", "platform"}
REPORT = {
    "git_commit",
    "git_dirty",
    "source",
    "source_kind",
    "timestamp",
    "broker",
    "settings",
    "machine",
    "scenarios",
    "raw_relay",
    "medians",
}


def missing(fields: set[str], found: dict) -> set[str]:
    """The fields absent from ``found``."""
    return fields - set(found)


def check_scenario(scenario: dict, kind: str) -> None:
    assert not missing(SCENARIO, scenario)
    assert scenario["kind"] == kind
    assert scenario["error"] is None
    for phase, fields in (("burst", BURST), ("paced", PACED)):
        figures = scenario[phase]
        assert not missing(fields, figures), phase
        assert set(figures["latency_ms"]) == LATENCY
        assert set(figures["machine"]) == PHASE_MACHINE
        assert isinstance(figures["pushed"], int) and isinstance(figures["expected"], int)
        assert isinstance(figures["delivered"], int) and isinstance(figures["complete"], bool)
    assert len(scenario["processes"]) == (scenario["workers"] if kind == "bus" else 1)
    for process in [*scenario["processes"], scenario["broker"]]:
        assert not missing(PROCESS, process)
        assert set(process["cpu_seconds"]) == CPU
    # Only a JVM has a JIT compiler whose CPU is counted apart.
    jit = scenario["broker"]["jit_cpu_seconds"]
    if TEST_BROKER == "kafka":
        assert set(jit) == CPU and isinstance(jit["total"], float)
    else:
        assert jit is None


@pytest.mark.timeout(600)
def test_quick_benchmark_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bus_benchmark.py"),
            "--quick",
            "--broker",
            TEST_BROKER,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-3000:]}"
    assert "burst rec/s" in run.stdout and str(out) in run.stdout
    assert f"broker: {TEST_BROKER} (" in run.stdout

    report = json.loads(out.read_text())
    assert not missing(REPORT, report)
    assert len(report["git_commit"]) == 40
    assert not missing(SETTINGS, report["settings"])
    assert report["settings"]["workers"] == [1] and report["settings"]["partitions"] == [4]
    assert not missing(MACHINE, report["machine"])
    assert set(report["broker"]) == BROKER and report["broker"]["kind"] == TEST_BROKER
    if TEST_BROKER == "kafka":
        assert report["broker"]["version"] == KAFKA_VERSION
        assert "-Xmx1g" in report["broker"]["jvm"]  # the benchmark's JVM, not the tests' small one
    else:
        assert report["broker"]["jvm"] is None

    assert len(report["scenarios"]) == 1
    bus = report["scenarios"][0]
    check_scenario(bus, "bus")
    assert (bus["workers"], bus["partitions"]) == (1, 4)
    assert set(bus["ratios_to_raw"]) == RATIOS

    assert len(report["raw_relay"]) == 1
    relay = report["raw_relay"][0]
    check_scenario(relay, "relay")
    assert relay["partitions"] == 4
    # The same records go to both, so the same number must be expected of both.
    assert relay["burst"]["expected"] == bus["burst"]["expected"]
    # One run: each median is that run's figure.
    relay_median, bus_median = report["medians"]
    assert relay_median["name"] == relay["name"] and relay_median["runs"] == 1
    assert bus_median["burst_throughput_rps"]["median"] == bus["burst"]["throughput_rps"]
    assert bus_median["ratio_burst_throughput"]["median"] == bus["ratios_to_raw"]["burst_throughput"]
