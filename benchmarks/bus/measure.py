"""Timing records to Log: the pusher to Source, the reader of Log, latency figures and ratios."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bus import BenchmarkError
from bus.processes import Meter


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


@dataclass
class Limits:
    timeout: float
    stall: float


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
