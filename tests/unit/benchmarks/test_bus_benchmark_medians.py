"""bus_benchmark's medians over repeated runs (the figures of one run drift; several runs' median less)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bus_benchmark", ROOT / "benchmarks" / "bus_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bus_benchmark", module)
    spec.loader.exec_module(module)
    return module


def result(name: str, rps: float | None, ratio: float | None = None, p99: float = 30.0, error: str | None = None):
    return {
        "name": name,
        "error": error,
        "burst": {"throughput_rps": rps, "cpu_ms_per_record": 0.1},
        "paced": {"latency_ms": {"p99": p99}},
        **({"ratios_to_raw": {"burst_throughput": ratio}} if ratio is not None else {}),
    }


def test_each_scenario_gets_the_median_and_range_of_its_runs_and_failed_runs_do_not_count():
    bench = load_benchmark()
    runs = [
        result("raw relay, 1p", 20_000),
        result("bus 1w x 1p", 9_000, 0.45, p99=40.0),
        result("raw relay, 1p", 16_000),
        result("bus 1w x 1p", 9_600, 0.60, p99=30.0),
        result("raw relay, 1p", 18_000),
        result("bus 1w x 1p", 10_000, 0.55, p99=35.0),
        result("bus 1w x 1p", None, None, error="RuntimeError: the worker exited"),
    ]
    relay, bus = bench.medians(runs)
    assert relay["name"] == "raw relay, 1p" and relay["runs"] == 3
    assert relay["burst_throughput_rps"] == {"median": 18_000, "min": 16_000, "max": 20_000}
    assert relay["ratio_burst_throughput"] == {"median": None, "min": None, "max": None}
    assert bus["runs"] == 3
    assert bus["burst_throughput_rps"]["median"] == 9_600
    assert bus["ratio_burst_throughput"] == {"median": 0.55, "min": 0.45, "max": 0.60}
    assert bus["paced_p99_ms"]["median"] == 35.0
    table = bench.medians_table([relay, bus])
    assert "0.55 (0.45-0.60)" in table and "18000 (16000-20000)" in table
