"""Benchmark of the demo bus (issue 7): throughput, latency, CPU and memory, against a raw relay.

Per scenario (workers x partitions) it starts a fresh broker (Tansu, the embedded one, or with
``--broker kafka`` a one-node Apache Kafka), creates the bus's topics
with the scenario's partition count, warms the caches through the CLI, starts the workers, waits
until every worker holds every cache entry, and then:

- burst: pushes ``--count`` records to Source as fast as aiokafka takes them, and times them to
  the Log topic;
- paced: pushes ``--rate`` records a second for ``--paced-seconds`` and times them the same way.

A raw relay (``raw_relay.py``: the same four hops by hand with plain aiokafka) runs the same two
phases on its own fresh broker, once per partition count, and the bus's figures are given as
ratios to it. See benchmarks/README.md for what every figure means.

    .venv/bin/python benchmarks/bus_benchmark.py            # full: 1 and 2 workers x 1 and 4 partitions
    .venv/bin/python benchmarks/bus_benchmark.py --quick    # 1 worker x 4 partitions, small, under a minute
    .venv/bin/python benchmarks/bus_benchmark.py --broker kafka   # the same on Apache Kafka (KRaft)
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

# The package bus/ beside this script holds the benchmark's parts; this file is only its command
# (also when it is loaded from its path, as tests/unit/benchmarks/test_bus_benchmark_medians.py does).
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from bus.launch import BROKERS, DEFAULT_FETCH_WAIT_MS, Context, make_data, py_spy_path  # noqa: E402
from bus.measure import Limits  # noqa: E402
from bus.phases import KAFKA_WARMUP_SECONDS, WARMUP_COUNT, WARMUP_RATE, Workload, warmup_records  # noqa: E402
from bus.report import document, machine, medians, medians_table, show, write  # noqa: E402
from bus.scenarios import run_matrix  # noqa: E402
from bus.source import ROOT, load_project, provenance, take_snapshot  # noqa: E402

__all__ = ["machine", "main", "medians", "medians_table"]  # medians: tests/unit; machine: hop_benchmark.py


def _setting(item: str) -> tuple[str, str]:
    name, equals, value = item.partition("=")
    if not equals or not name.startswith("METROBUS_"):
        raise click.BadParameter(f"{item!r}: give METROBUS_NAME=VALUE", param_hint="--set")
    if name in (
        "METROBUS_FETCH_WAIT_MS",
        "METROBUS_BROKER",
        "METROBUS_DATA_DIR",
        "METROBUS_WEB_PORT",
        "METROBUS_PARTITIONS",
    ):
        raise click.BadParameter(f"{name} is set by the benchmark itself", param_hint="--set")
    return name, value


def _ints(value: str) -> list[int]:
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of whole numbers") from None
    if not numbers or any(n < 1 for n in numbers):
        raise click.BadParameter(f"{value!r}: give one or more numbers of at least 1")
    return numbers


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="1 worker x 4 partitions, 1000 records, 3 s paced: under a minute.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Burst records [10000; quick 1000].")
@click.option("--rate", type=click.FloatRange(min=1), default=100, show_default=True, help="Paced records/s.")
@click.option("--paced-seconds", type=click.FloatRange(min=1), default=None, help="Paced phase length [10; quick 3].")
@click.option("--accounts", type=click.IntRange(1, 1_000_000), default=None, help="Demo accounts [10000; quick 2000].")
@click.option("--workers", "workers_list", default=None, help="Comma-separated worker counts [1,2; quick 1].")
@click.option("--partitions", "partitions_list", default=None, help="Comma-separated partition counts [1,4; quick 4].")
@click.option("--no-relay", is_flag=True, help="Skip the raw relay baseline (no ratios then).")
@click.option(
    "--broker",
    "broker_kind",
    type=click.Choice(BROKERS),
    default="tansu",
    show_default=True,
    help="The broker of every scenario: Tansu (embedded) or Apache Kafka (KRaft, one node; needs java and mvn).",
)
@click.option(
    "--fetch-wait-ms",
    type=click.IntRange(min=0),
    default=None,
    help="METROBUS_FETCH_WAIT_MS of the workers and the relay [$METROBUS_FETCH_WAIT_MS; tansu 10, kafka 500].",
)
@click.option(
    "--set",
    "worker_settings",
    multiple=True,
    metavar="METROBUS_NAME=VALUE",
    help="Another setting of the workers, e.g. --set METROBUS_LINGER_MS=20 (the relay takes linger, batch size, loop).",
)
@click.option(
    "--warmup-seconds",
    type=click.FloatRange(0, 3600),
    default=None,
    help=f"Warm up longer: {WARMUP_COUNT} records, then {WARMUP_RATE}/s for this long, so that a JVM broker's JIT "
    f"has compiled its hot code [kafka {KAFKA_WARMUP_SECONDS}; tansu and --quick 0].",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the demo data and pushed records.")
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Longest wait of a phase (s)."
)
@click.option(
    "--stall",
    type=click.FloatRange(min=1),
    default=30,
    show_default=True,
    help="Give up a phase after this many s without arrivals.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="JSON file [benchmarks/results/...]."
)
@click.option(
    "--source",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=ROOT,
    help="Tree whose metrobus the workers run [this repo's working tree].",
)
@click.option(
    "--snapshot",
    is_flag=True,
    help="Run the code of HEAD (a `git archive` copy), not the working tree, which others may edit meanwhile.",
)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Keep logs here.")
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="py-spy record worker0 during each bus burst into DIR (raw/collapsed format). Slows that worker.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run everything N times (relay, then bus, in turn) and print each scenario's median too.",
)
def main(
    quick: bool,
    count: int | None,
    rate: float,
    paced_seconds: float | None,
    accounts: int | None,
    workers_list: str | None,
    partitions_list: str | None,
    no_relay: bool,
    broker_kind: str,
    fetch_wait_ms: int | None,
    worker_settings: tuple[str, ...],
    warmup_seconds: float | None,
    seed: int,
    timeout: float,
    stall: float,
    out: Path | None,
    source: Path,
    snapshot: bool,
    work_dir: Path | None,
    profile_dir: Path | None,
    repeat: int,
) -> None:
    """Benchmark the demo bus against a raw aiokafka relay; print a table, write a JSON file."""
    count = count or (1000 if quick else 10_000)
    paced_seconds = paced_seconds or (3 if quick else 10)
    accounts = accounts or (2000 if quick else 10_000)
    workers = _ints(workers_list or ("1" if quick else "1,2"))
    partitions = _ints(partitions_list or ("4" if quick else "1,4"))
    if warmup_seconds is None:
        warmup_seconds = KAFKA_WARMUP_SECONDS if broker_kind == "kafka" and not quick else 0
    if fetch_wait_ms is None:
        fetch_wait_ms = int(os.environ.get("METROBUS_FETCH_WAIT_MS") or DEFAULT_FETCH_WAIT_MS[broker_kind])
    extra = dict(_setting(item) for item in worker_settings)
    if snapshot and source.resolve() != ROOT:
        raise click.UsageError("give --source or --snapshot, not both")
    if profile_dir and not Path(py_spy_path()).exists():
        raise click.UsageError("--profile needs py-spy (a dev dependency): pip install py-spy")
    begun = time.monotonic()
    if broker_kind == "kafka":
        # The jars are kept beside this checkout, also when the workers run a --snapshot or
        # --source tree (whose own .kafka/ would be empty: Maven would fetch them again).
        os.environ.setdefault("METROBUS_KAFKA_HOME", str(ROOT / ".kafka"))
    work = work_dir.resolve() if work_dir else Path(tempfile.mkdtemp(prefix="metrobus-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_of = None
        if snapshot:
            source = work / "source"
            shutil.rmtree(source, ignore_errors=True)
            snapshot_of = take_snapshot(source)
        source = source.resolve()
        project = load_project(source)
        origin = provenance(source, snapshot_of)
        data = make_data(source, work, accounts, seed)
        workload = Workload.from_data(project, data, accounts, seed)
        ctx = Context(
            project=project,
            source=source,
            work=work,
            data=data,
            workload=workload,
            warmed=workload.warmed(),
            count=count,
            rate=rate,
            paced_seconds=paced_seconds,
            fetch_wait_ms=fetch_wait_ms,
            limits=Limits(timeout, stall),
            profile_dir=profile_dir.resolve() if profile_dir else None,
            broker=broker_kind,
            warmup_seconds=warmup_seconds,
            worker_settings=extra,
        )
        broker = ctx.broker_info()
        scenarios, relays = run_matrix(ctx, workers, partitions, repeat, relay=not no_relay)
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    now = datetime.datetime.now(datetime.UTC)
    settings = {
        "quick": quick,
        "count": count,
        "rate": rate,
        "paced_seconds": paced_seconds,
        "accounts": accounts,
        "workers": workers,
        "partitions": partitions,
        "METROBUS_FETCH_WAIT_MS": fetch_wait_ms,
        "worker_settings": extra,
        "warmed": ctx.warmed,
        "warmup_records": warmup_records(warmup_seconds),
        "warmup_seconds": warmup_seconds,
        "seed": seed,
        "timeout_s": timeout,
        "stall_s": stall,
        "profiled": ctx.profile_dir is not None,
        "repeat": repeat,
    }
    report = document(origin, now, broker, settings, scenarios, relays, begun)
    out = write(report, out, now)
    show(report, out)
    if any(r["error"] for r in [*scenarios, *relays]):
        sys.exit(1)


if __name__ == "__main__":
    main()
