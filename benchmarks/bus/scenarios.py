"""The scenarios of a run, each on its own fresh broker (the bus or the raw relay); the bus's ratios to the relay."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from bus.launch import Context, create_topics, start_profiler, start_relay, start_workers, wait_for_caches, warm_caches
from bus.measure import ratio
from bus.phases import run_phases
from bus.processes import Process


def run_scenario(ctx: Context, kind: str, workers: int, partitions: int, repeat: int = 1) -> dict[str, Any]:
    """One scenario on its own fresh broker: the bus with ``workers`` workers, or the raw relay."""
    name = f"raw relay, {partitions}p" if kind == "relay" else f"bus {workers}w x {partitions}p"
    slug = f"relay-{partitions}p" if kind == "relay" else f"bus-{workers}w-{partitions}p"
    slug += f"-{repeat}" if repeat > 1 else ""
    work = ctx.work / slug
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "name": name, "kind": kind, "workers": workers, "partitions": partitions, "repeat": repeat, "error": None,
    }  # fmt: skip
    click.echo(f"--- {name}" + (f" (repeat {repeat})" if repeat > 1 else ""), err=True)
    processes: list[Process] = []
    broker = ctx.new_broker(work / "broker.log")
    started = time.monotonic()
    try:
        broker.start()
        broker_process = Process("broker", broker.process, jvm=broker.kind == "kafka")
        asyncio.run(create_topics(broker.bootstrap, partitions))
        if kind == "bus":
            warm_caches(ctx, broker.url, partitions, work)
            start_workers(ctx, broker.url, workers, partitions, work, processes)
            result["caches_loaded_seconds"] = [
                round(wait_for_caches(p, ctx.warmed, ctx.limits.timeout), 1) for p in processes
            ]
        else:
            start_relay(ctx, broker.bootstrap, work, processes)
        result["setup_seconds"] = round(time.monotonic() - started, 1)
        profiler = start_profiler(ctx, slug, processes[0].pid) if kind == "bus" else None
        figures = asyncio.run(
            run_phases(
                broker.bootstrap,
                ctx.workload,
                [*processes, broker_process],
                count=ctx.count,
                rate=ctx.rate,
                paced_seconds=ctx.paced_seconds,
                fetch_wait_ms=ctx.fetch_wait_ms,
                limits=ctx.limits,
                warmup_seconds=ctx.warmup_seconds,
                on_burst=profiler,
            )
        )
        result.update(figures)
        for process in [*processes, broker_process]:
            process.mark("end")
            process.snapshot_memory()
        result["processes"] = [p.figures() for p in processes]
        result["broker"] = {**broker_process.figures(), "jit_cpu_seconds": broker_process.jit_figures()}
        burst_cpu = [p.figures()["cpu_seconds"]["burst"] for p in processes]
        if all(c is not None for c in burst_cpu) and ctx.count:
            result["burst"]["cpu_ms_per_record"] = round(sum(burst_cpu) * 1000 / ctx.count, 3)  # type: ignore[arg-type]
        else:
            result["burst"]["cpu_ms_per_record"] = None
    except (Exception, asyncio.CancelledError) as exc:  # a failed scenario is recorded, and the run goes on
        result["error"] = f"{type(exc).__name__}: {exc}"
        click.secho(f"    {name} failed: {result['error']}", fg="red", err=True)
    finally:
        for process in processes:
            process.stop()
        broker.stop()
    result["scenario_seconds"] = round(time.monotonic() - started, 1)
    return fill_missing(result)


EMPTY_LATENCY = {"p50": None, "p99": None, "max": None, "mean": None}
EMPTY_MACHINE = {
    "wall_seconds": None,
    "machine_busy_cpu_seconds": None,
    "benchmark_cpu_seconds": None,
    "foreign_cpu_seconds": None,
    "foreign_cpu_share": None,
}


def fill_missing(result: dict[str, Any]) -> dict[str, Any]:
    """Every field present, None where a failed scenario has no figure."""
    result.setdefault(
        "burst",
        {"pushed": None, "expected": None, "delivered": None, "complete": False, "push_seconds": None,
         "seconds": None, "throughput_rps": None, "delivered_rps": None, "latency_ms": dict(EMPTY_LATENCY)},
    )  # fmt: skip
    result["burst"].setdefault("cpu_ms_per_record", None)
    result["burst"].setdefault("machine", dict(EMPTY_MACHINE))
    result.setdefault(
        "paced",
        {"pushed": None, "rate": None, "achieved_rate": None, "expected": None, "delivered": None,
         "complete": False, "latency_ms": dict(EMPTY_LATENCY)},
    )  # fmt: skip
    result["paced"].setdefault("machine", dict(EMPTY_MACHINE))
    result.setdefault("duplicates_on_log", None)
    result.setdefault("unreadable_on_log", None)
    result.setdefault("processes", [])
    result.setdefault("broker", None)
    result.setdefault("setup_seconds", None)
    return result


def add_ratios(bus: dict[str, Any], raw: dict[str, Any] | None) -> None:
    """The bus's figures over the raw relay's with the same partitions (>1 latency, <1 throughput: slower)."""
    if raw is None:
        bus["ratios_to_raw"] = {
            "burst_throughput": None,
            "burst_p50": None,
            "burst_p99": None,
            "paced_p50": None,
            "paced_p99": None,
            "paced_max": None,
            "burst_cpu_per_record": None,
        }
        return
    bus["ratios_to_raw"] = {
        "burst_throughput": ratio(bus["burst"]["throughput_rps"], raw["burst"]["throughput_rps"]),
        "burst_p50": ratio(bus["burst"]["latency_ms"]["p50"], raw["burst"]["latency_ms"]["p50"]),
        "burst_p99": ratio(bus["burst"]["latency_ms"]["p99"], raw["burst"]["latency_ms"]["p99"]),
        "paced_p50": ratio(bus["paced"]["latency_ms"]["p50"], raw["paced"]["latency_ms"]["p50"]),
        "paced_p99": ratio(bus["paced"]["latency_ms"]["p99"], raw["paced"]["latency_ms"]["p99"]),
        "paced_max": ratio(bus["paced"]["latency_ms"]["max"], raw["paced"]["latency_ms"]["max"]),
        "burst_cpu_per_record": ratio(bus["burst"]["cpu_ms_per_record"], raw["burst"]["cpu_ms_per_record"]),
    }


def run_matrix(
    ctx: Context, workers: list[int], partitions: list[int], repeat: int, relay: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every bus scenario (workers x partitions), ``repeat`` times; the bus's results and the relay's.

    Each bus scenario is set against the relay of its own repeat with its partitions, run just before.
    """
    all_relays: list[dict[str, Any]] = []
    scenarios = []
    for r in range(1, repeat + 1):  # each bus scenario against the relay of its own repeat, run just before
        relays: dict[int, dict[str, Any]] = {}
        if relay:
            for p in partitions:
                relays[p] = run_scenario(ctx, "relay", 1, p, r)
        all_relays += relays.values()
        for w in workers:
            for p in partitions:
                scenario = run_scenario(ctx, "bus", w, p, r)
                add_ratios(scenario, relays.get(p))
                scenarios.append(scenario)
    return scenarios, all_relays
