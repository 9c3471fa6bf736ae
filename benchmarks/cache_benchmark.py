"""Caches at scale: warm 1M + 1M entries from files and from Redis into running workers, restart
a worker with and without its data dir, and time lookups beside a dict and a Redis GET.

    .venv/bin/python benchmarks/cache_benchmark.py            # 1,000,000 entries per cache, 2 workers
    .venv/bin/python benchmarks/cache_benchmark.py --quick    # 20,000 entries, 1 worker

Every figure is printed and written as JSON to benchmarks/results/ (or --out).
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metrobus_app.brokers import EmbeddedBroker, free_port  # noqa: E402
from metrobus_app.caches.cache import Cache  # noqa: E402

FAUST = [sys.executable, "-m", "faust", "-A", "metrobus_app"]


def write_files(folder: Path, entries: int) -> tuple[Path, Path]:
    """The seed's formats, ``entries`` lines each (no Faker: 1M fake names would take a minute)."""
    emails, whitelist = folder / "emails.dat", folder / "whitelist.dat"
    with open(emails, "w") as out:
        out.writelines(f"{1_000_000 + i},user{i}@example.com\n" for i in range(entries))
    with open(whitelist, "w") as out:
        out.writelines(f"user{i}@example.com\n" for i in range(entries))
    return emails, whitelist


class Worker:
    """A worker process with its own data dir and web port."""

    def __init__(self, broker: EmbeddedBroker, folder: Path, name: str) -> None:
        self.port = free_port()
        self.data_dir = folder / f"{name}-data"
        self.log = folder / f"{name}.log"
        self.env = bench_env(broker, self.data_dir, METROBUS_WEB_PORT=str(self.port))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*FAUST, "worker", "-l", "info"], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def counts(self) -> dict[str, int] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrobus/caches/", timeout=2) as response:
                caches = json.load(response)
        except OSError:
            return None
        if not all(info["ready"] for info in caches.values()):
            return None
        return {name: info["entries"] for name, info in caches.items()}

    def wait_for(self, want: dict[str, int] | None, timeout: float = 600) -> float:
        """Seconds until the worker serves its web views (and holds ``want``)."""
        started = time.monotonic()
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise click.ClickException(f"worker stopped; see {self.log}")
            got = self.counts()
            if got is not None and (want is None or got == want):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise click.ClickException(f"worker never held {want} (last: {got}); see {self.log}")
            time.sleep(0.1)

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


def bench_env(broker: EmbeddedBroker, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METROBUS_")}
    env.update(METROBUS_BROKER=broker.url, METROBUS_DATA_DIR=str(data_dir), **extra)
    return env


def timed_warm(env: dict[str, str], args: list[str], workers: list[Worker], want: dict[str, int]) -> dict[str, Any]:
    """Run a warm command; time it alone and until every worker holds ``want``."""
    started = time.monotonic()
    result = subprocess.run([*FAUST, "warm", *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise click.ClickException(f"warm failed: {result.stderr.strip()}")
    command = time.monotonic() - started
    for worker in workers:
        worker.wait_for(want)
    total = time.monotonic() - started
    entries = sum(want.values())
    return {
        "summary": result.stdout.strip().splitlines(),
        "command_s": round(command, 2),
        "until_all_workers_ready_s": round(total, 2),
        "entries_per_s": round(entries / total),
    }


def lookups(data_dir: Path, entries: int, redis_url: str) -> dict[str, float]:
    """Gets per second on a warm cache, a dict of the same entries, and Redis GET over loopback."""
    cache = Cache("emails", "unused")
    cache.open("rocksdb://", data_dir)
    rng = random.Random(1)
    # About 90% hits, as in the demo: a tenth of the keys are accounts without an email.
    keys = [str(1_000_000 + rng.randrange(entries * 10 // 9)) for _ in range(min(entries, 1_000_000))]
    get = cache.get
    started = time.perf_counter()
    for key in keys:
        get(key)
    cache_rate = len(keys) / (time.perf_counter() - started)
    cache.close()
    plain = {str(1_000_000 + i): f"user{i}@example.com" for i in range(entries)}
    started = time.perf_counter()
    for key in keys:
        plain.get(key)
    dict_rate = len(keys) / (time.perf_counter() - started)
    client = redis.Redis.from_url(redis_url)
    sample = keys[:20_000]
    started = time.perf_counter()
    for key in sample:
        client.hget("account_emails", key)
    redis_rate = len(sample) / (time.perf_counter() - started)
    return {
        "cache_get_per_s": round(cache_rate),
        "dict_get_per_s": round(dict_rate),
        "redis_get_per_s": round(redis_rate),
    }


def start_redis(stack: ExitStack, folder: Path) -> str:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    stack.callback(process.terminate)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            return url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise click.ClickException("redis-server did not start")


def fill_redis(url: str, entries: int) -> None:
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for start in range(0, entries, 10_000):
        chunk = range(start, min(start + 10_000, entries))
        pipe.hset("account_emails", mapping={str(1_000_000 + i): f"user{i}@example.com" for i in chunk})
        pipe.sadd("whitelist", *[f"user{i}@example.com" for i in chunk])
        pipe.execute()


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "git_commit": commit,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@click.command()
@click.option("--entries", type=click.IntRange(min=1000), default=1_000_000, show_default=True, help="Per cache.")
@click.option("--workers", "worker_count", type=click.IntRange(1, 4), default=2, show_default=True)
@click.option("--quick", is_flag=True, help="20,000 entries and 1 worker: a smoke run.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="JSON result file.")
def main(entries: int, worker_count: int, quick: bool, out: Path | None) -> None:
    """Measure warming, recovery and lookups of the caches."""
    if quick:
        entries, worker_count = 20_000, 1
    want = {"emails": entries, "whitelist": entries}
    result: dict[str, Any] = {"entries_per_cache": entries, "workers": worker_count, "machine": machine()}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="metrobus-cache-bench-")))
        emails, whitelist = write_files(folder, entries)
        redis_url = start_redis(stack, folder)
        fill_redis(redis_url, entries)

        broker = stack.enter_context(EmbeddedBroker(log_path=folder / "broker.log"))
        workers = [Worker(broker, folder, f"w{i}").start() for i in range(worker_count)]
        for worker in workers:
            stack.callback(worker.stop)
            worker.wait_for(None)
        env = bench_env(broker, folder / "cli")
        click.echo(f"warming {entries:,} + {entries:,} entries from files into {worker_count} worker(s)")
        result["warm_files"] = timed_warm(env, ["--emails", str(emails), "--whitelist", str(whitelist)], workers, want)
        result["rewarm_same_files"] = timed_warm(
            env, ["--emails", str(emails), "--whitelist", str(whitelist), "--replace"], workers, want
        )
        result["peak_rss_mb"] = [round(worker.peak_rss_mb()) for worker in workers]

        first = workers[0]
        first.stop()
        first.start()
        result["restart_with_data_dir_s"] = round(first.wait_for(want), 2)
        fresh = Worker(broker, folder, "fresh").start()
        stack.callback(fresh.stop)
        result["new_worker_empty_data_dir_s"] = round(fresh.wait_for(want), 2)
        result["recovery_entries_per_s"] = round(2 * entries / result["new_worker_empty_data_dir_s"])
        for worker in [*workers, fresh]:
            worker.stop()

        second = stack.enter_context(EmbeddedBroker(log_path=folder / "broker2.log"))
        redis_workers = [Worker(second, folder, f"r{i}").start() for i in range(worker_count)]
        for worker in redis_workers:
            stack.callback(worker.stop)
            worker.wait_for(None)
        click.echo(f"warming {entries:,} + {entries:,} entries from Redis into {worker_count} fresh worker(s)")
        redis_args = ["--emails-hash", "account_emails", "--whitelist-set", "whitelist", "--redis-url", redis_url]
        result["warm_redis"] = timed_warm(bench_env(second, folder / "cli2"), redis_args, redis_workers, want)
        for worker in redis_workers:
            worker.stop()

        result["lookups"] = lookups(first.data_dir, entries, redis_url)

    path = out or ROOT / "benchmarks" / "results" / f"cache-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    show(result)
    click.echo(f"\nwritten to {path}")


def show(result: dict[str, Any]) -> None:
    n, lookups_ = result["entries_per_cache"], result["lookups"]
    rows = [
        ("warm from files, until all workers ready", result["warm_files"]),
        ("re-warm the same files (--replace)", result["rewarm_same_files"]),
        ("warm from Redis, until all workers ready", result["warm_redis"]),
    ]
    click.echo(f"\ncaches of {n:,} + {n:,} entries, {result['workers']} worker(s)")
    for label, figures in rows:
        click.echo(
            f"  {label:44s} {figures['until_all_workers_ready_s']:7.1f} s  {figures['entries_per_s']:>9,} entries/s"
            f"  (command alone {figures['command_s']:.1f} s)"
        )
    click.echo(f"  {'worker restart with its data dir':44s} {result['restart_with_data_dir_s']:7.1f} s")
    click.echo(
        f"  {'new worker, empty data dir':44s} {result['new_worker_empty_data_dir_s']:7.1f} s"
        f"  {result['recovery_entries_per_s']:>9,} entries/s"
    )
    click.echo(f"  {'peak RSS per worker (MB)':44s} {result['peak_rss_mb']}")
    click.echo(
        f"  lookups/s: cache.get {lookups_['cache_get_per_s']:,}  dict {lookups_['dict_get_per_s']:,}"
        f"  Redis HGET {lookups_['redis_get_per_s']:,}"
    )


if __name__ == "__main__":
    main()
