"""What a scenario runs once set up: the workload it pushes, the warm-up, the burst and the paced phase."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bus import BenchmarkError
from bus.measure import Limits, LogReader, Pusher, latency_figures
from bus.processes import Meter, Process

# Records of each phase carry x in their own range, so the Log reader tells the phases apart.
WARMUP_BASE, BURST_BASE, PACED_BASE = 0, 10_000_000, 20_000_000
WARMUP_COUNT, WARMUP_RATE = 200, 500  # records, and records/s (also of --warmup-seconds' extra ones)
# A fresh Kafka JVM compiles its hot code for tens of seconds under traffic: after the 200-record
# warm-up alone its JIT took about half the broker's CPU in the paced phase (1.4 of 2.9 s, --quick),
# after 20 s more of warm-up traffic 0.02-0.2 s. Tansu (Rust) needs none, and its topics should not grow.
KAFKA_WARMUP_SECONDS = 30


@dataclass
class Workload:
    """What is pushed and what must arrive: the demo data, as the bus's own code reads it."""

    project: SimpleNamespace
    accounts: int
    emails: dict[str, str]
    whitelisted: set[str]
    seed: int

    @classmethod
    def from_data(cls, project: SimpleNamespace, data: Path, accounts: int, seed: int) -> Workload:
        """The workload of the demo data in ``data`` (made for ``accounts`` accounts), read as the bus reads it."""
        emails = dict(project.read_emails(data / "emails.dat", project.ReadReport(data / "emails.dat")))
        whitelisted = {e for e, _ in project.read_whitelist(data / "whitelist.dat", project.ReadReport(data))}
        return cls(project, accounts, emails, whitelisted, seed)

    def warmed(self) -> dict[str, int]:
        """The entries every worker's caches must hold once warmed."""
        return {"emails": len(self.emails), "whitelist": len(self.whitelisted)}

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


def warmup_records(warmup_seconds: float) -> int:
    """How many records the warm-up pushes: ``WARMUP_COUNT``, and ``WARMUP_RATE`` a second more."""
    return WARMUP_COUNT + round(WARMUP_RATE * warmup_seconds)


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
