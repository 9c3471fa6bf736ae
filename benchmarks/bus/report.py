"""The run's report: the printed tables, the medians over repeats, the machine it ran on, the JSON file."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

RESULTS = Path(__file__).resolve().parents[1] / "results"


def broker_line(info: dict[str, Any]) -> str:
    """The broker of the run, as the table's first line."""
    if info["kind"] == "kafka":
        return f"broker: kafka (Apache Kafka {info['version']}, KRaft, 1 node; JVM {' '.join(info['jvm'])})"
    return f"broker: tansu ({info['version'] or 'version unknown'}, embedded, in memory)"


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float | int) else str(value)


def table(results: list[dict[str, Any]]) -> str:
    """The run as a short text table."""
    head = (
        f"{'scenario':<18} {'burst rec/s':>11} {'p50':>7} {'p99':>7} {'max':>7}  {'deliv/exp':>11}  "
        f"{'paced p50':>9} {'p99':>7} {'max':>7}  {'deliv/exp':>9}  "
        f"{'cpu s':>11} {'ms/rec':>6} {'peak MB':>11} {'other':>5}"
    )
    lines = [head, "-" * len(head)]
    repeated = any(r.get("repeat", 1) > 1 for r in results)

    def label(r: dict[str, Any]) -> str:
        return f"{r['name']} #{r['repeat']}" if repeated else r["name"]

    for r in results:
        b, p = r["burst"], r["paced"]
        cpu = "+".join(_n(x["cpu_seconds"]["burst"], 1) for x in r["processes"]) or "-"
        rss = "+".join(_n(x["peak_rss_mb"]) for x in r["processes"]) or "-"
        share = b["machine"]["foreign_cpu_share"]
        other = "-" if share is None else f"{share:.0%}"
        mark_b = "" if b["complete"] else " !"
        mark_p = "" if p["complete"] else " !"
        lines.append(
            f"{label(r):<18} {_n(b['throughput_rps']):>11} {_n(b['latency_ms']['p50'], 1):>7} "
            f"{_n(b['latency_ms']['p99'], 1):>7} {_n(b['latency_ms']['max'], 1):>7}  "
            f"{_n(b['delivered']) + '/' + _n(b['expected']) + mark_b:>11}  "
            f"{_n(p['latency_ms']['p50'], 1):>9} {_n(p['latency_ms']['p99'], 1):>7} "
            f"{_n(p['latency_ms']['max'], 1):>7}  "
            f"{_n(p['delivered']) + '/' + _n(p['expected']) + mark_p:>9}  {cpu:>11} "
            f"{_n(b['cpu_ms_per_record'], 2):>6} {rss:>11} {other:>5}"
        )
        if r["error"]:
            lines.append(f"    error: {r['error'].splitlines()[0]}")
    jit = [(label(r), r["broker"]["jit_cpu_seconds"]) for r in results if r["broker"]]
    if any(figures is not None for _, figures in jit):
        lines += [
            "",
            "CPU s of the broker's JIT compiler (burst/paced), taken from the same CPUs: "
            + "; ".join(f"{name} {_n(f['burst'], 2)}/{_n(f['paced'], 2)}" for name, f in jit if f),
        ]
    bus = [r for r in results if r["kind"] == "bus"]
    if bus:
        lines += [
            "",
            "bus / raw relay (same partitions): throughput <1 and latency >1 mean the bus is slower",
            f"{'scenario':<18} {'burst tput':>10} {'burst p50':>9} {'burst p99':>9} {'paced p50':>9} "
            f"{'paced p99':>9} {'cpu/rec':>7}",
        ]
        for r in bus:
            q = r["ratios_to_raw"]
            lines.append(
                f"{label(r):<18} {_n(q['burst_throughput'], 2):>10} {_n(q['burst_p50'], 2):>9} "
                f"{_n(q['burst_p99'], 2):>9} {_n(q['paced_p50'], 2):>9} {_n(q['paced_p99'], 2):>9} "
                f"{_n(q['burst_cpu_per_record'], 2):>7}"
            )
    lines += [
        "",
        "latencies in ms (push -> Log record timestamp); cpu s: CPU seconds of each worker during the burst;",
        "peak MB: VmHWM of each worker; other: CPU used by other processes of the machine during the burst,",
        "as a share of all CPUs (high: the figures are disturbed); '!': not everything expected arrived in time.",
    ]
    return "\n".join(lines)


def medians(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario, over its repeats: the median (and range) of throughput, ratio, paced p99 and CPU per record."""
    summary = []
    for name in dict.fromkeys(r["name"] for r in results):
        runs = [r for r in results if r["name"] == name and not r["error"]]
        summary.append(
            {
                "name": name,
                "runs": len(runs),
                "burst_throughput_rps": _spread(r["burst"]["throughput_rps"] for r in runs),
                "ratio_burst_throughput": _spread(r.get("ratios_to_raw", {}).get("burst_throughput") for r in runs),
                "paced_p99_ms": _spread(r["paced"]["latency_ms"]["p99"] for r in runs),
                "cpu_ms_per_record": _spread(r["burst"]["cpu_ms_per_record"] for r in runs),
            }
        )
    return summary


def _spread(figures: Iterable[float | None]) -> dict[str, Any]:
    values = sorted(v for v in figures if v is not None)
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": values[0], "max": values[-1]}


def medians_table(summary: list[dict[str, Any]]) -> str:
    """The medians over repeats as a text table: median (min-max)."""

    def cell(figure: dict[str, Any], digits: int) -> str:
        if figure["median"] is None:
            return "-"
        return f"{figure['median']:.{digits}f} ({figure['min']:.{digits}f}-{figure['max']:.{digits}f})"

    lines = [
        f"{'scenario':<18} {'runs':>4}  {'burst rec/s':>21}  {'ratio to relay':>18}  {'paced p99 ms':>18}  "
        f"{'ms/rec':>18}"
    ]
    for s in summary:
        lines.append(
            f"{s['name']:<18} {s['runs']:>4}  {cell(s['burst_throughput_rps'], 0):>21}  "
            f"{cell(s['ratio_burst_throughput'], 2):>18}  {cell(s['paced_p99_ms'], 1):>18}  "
            f"{cell(s['cpu_ms_per_record'], 3):>18}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def document(
    origin: dict[str, Any],
    now: datetime.datetime,
    broker: dict[str, Any],
    settings: dict[str, Any],
    scenarios: list[dict[str, Any]],
    relays: list[dict[str, Any]],
    begun: float,
) -> dict[str, Any]:
    """The JSON file's content: which code ran where and how, every scenario, the relay's, the medians."""
    return {
        "benchmark": "metrobus demo bus vs raw aiokafka relay (issue 7)",
        **origin,
        "timestamp": now.isoformat(timespec="seconds"),
        "broker": broker,
        "settings": settings,
        "machine": machine(),
        "scenarios": scenarios,
        "raw_relay": relays,
        "medians": medians([*relays, *scenarios]),
        "total_seconds": round(time.monotonic() - begun, 1),
    }


def write(report: dict[str, Any], out: Path | None, now: datetime.datetime) -> Path:
    """Write the JSON file (to ``out``, or benchmarks/results/bus-TIME.json); its path."""
    out = out or RESULTS / f"bus-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out


def show(report: dict[str, Any], out: Path) -> None:
    """Print the broker, the table of every scenario, the medians over repeats, and where the figures are."""
    scenarios, repeat = report["scenarios"], report["settings"]["repeat"]
    click.echo(broker_line(report["broker"]))
    click.echo(table([*report["raw_relay"], *scenarios]))
    if repeat > 1:
        click.echo(f"\nmedian (min-max) of {repeat} repeats:\n" + medians_table(report["medians"]))
    click.echo(f"\n{len(scenarios)} scenarios in {report['total_seconds']:.0f} s; figures in {out}")
