"""The cluster view: every worker publishes its numbers and its messages' fates, and reads everyone's.

Each worker

- publishes a snapshot of its counters (``BusStats.snapshot()``) every 2 s to the compacted
  topic ``<app id>-stats``, keyed by its worker id (``Bus.worker_id``);
- publishes the terminal fates of its messages (delivered, dropped, dead-lettered) every
  0.5 s and before every offset commit, many to a record (``observe/fates.py``), to the time-retained
  topic ``<app id>-fates``, keyed ``<run id>-<n>`` (a run: this worker process);
- reads both topics whole with a plain consumer (no group: every worker reads everything),
  so that its ``/metrobus/stats/`` can add up the whole cluster and its
  ``/metrobus/messages/{id}`` can answer for a message any worker handled.

A worker whose snapshot is older than ``STALE_AFTER_S`` is shown as stale (its counts stay in
the totals: they are work that was done); one older than ``FORGET_AFTER_S`` is left out.
Nothing here runs per message: the bus's observers only count and queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import uuid
from collections import deque
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from metrobus_app.config.settings import Settings
from metrobus_app.observe.fates import ON_THE_WAY, FateStore
from metrobus_app.observe.metrics import registry
from metrobus_app.observe.stats import merge, view
from metrobus_app.runtime.clients import partitions_of, plain_consumer
from metrobus_app.wire.envelope import encode_json
from metrobus_app.wire.topics import fates_topic, stats_topic

log = logging.getLogger("metrobus.watch")

STATS_EVERY_S = 2.0
FATES_EVERY_S = 0.5
STALE_AFTER_S = 10.0
FORGET_AFTER_S = 600.0
ASK_PEERS_TIMEOUT_S = 1.5


def watch_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A plain consumer of the stats and fates topics: every worker reads everything."""
    return plain_consumer(settings, "watch", min_wait_ms=200)


class Watch:
    """This worker's eyes on the bus: its fate store, the other workers' snapshots, the topics between them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bus = app.bus
        self.settings: Settings = app.settings
        self.worker_id: str = self.bus.worker_id
        self.fates = FateStore(self.settings.fates_max, self.settings.fates_ttl_s, self.worker_id)
        if self.settings.fates_max > 0:
            self.bus.observers.append(self.fates.record)
        self.peers: dict[str, dict[str, Any]] = {}
        self.stats_topic_name = stats_topic(self.settings.app_id)
        self.fates_topic_name = fates_topic(self.settings.app_id)
        self._topics: dict[str, Any] = {}
        self._declared = False  # nothing is sent before the topics exist with their settings
        self._publishing = asyncio.Lock()
        self._unsent: deque[tuple[bytes, bytes]] = deque()
        self.run_id = uuid.uuid4().hex[:12]
        self._own_records = f"{self.run_id}-".encode()
        self._records_published = 0
        self.metrics = registry(self.bus.stats, self.fates)

    @property
    def url(self) -> str:
        """Where this worker's web server answers (Faust's canonical URL)."""
        return self.app.conf.canonical_url.human_repr()

    def topic(self, name: str) -> Any:
        """The stats topic (one partition, latest snapshot per worker) or the fates topic."""
        try:
            return self._topics[name]
        except KeyError:
            stats = name == self.stats_topic_name
            topic = self._topics[name] = self.app.topic(
                name,
                partitions=1 if stats else self.settings.partitions,
                replicas=self.settings.topic_replication,
                compacting=stats,  # a snapshot per worker; fates: records with keys of their own
                deleting=True,
                retention=FORGET_AFTER_S if stats else float(self.settings.fates_ttl_s),
                internal=True,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
            )
            return topic

    # --- views ----------------------------------------------------------------------------

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """What this worker publishes: its counters, who it is, and when."""
        now = time.time() if now is None else now
        self.bus.stats.declare(self.bus.stop_agents())  # the stops this worker runs, at zero before their first message
        return {
            "worker": self.worker_id,
            "url": self.url,
            "time": now,
            "started": self.bus.stats.started,
            "fates_kept": len(self.fates),
            **self.bus.stats.snapshot(now),
        }

    def stats(self) -> dict[str, Any]:
        """``/metrobus/stats/``: this worker's numbers (``stops``, ``bus``), and the ``cluster``'s."""
        now = time.time()
        local = self.snapshot(now)
        return {
            "worker": local["url"],
            "worker_id": self.worker_id,
            "time": now,
            **view(local),
            "external_stops": sorted(self.settings.external_stops),
            "fates": {"kept": len(self.fates), "max": self.fates.max_count, "ttl_s": self.fates.ttl_s},
            "cluster": self.cluster(local, now),
        }

    def members(self, local: dict[str, Any], now: float) -> dict[str, dict[str, Any]]:
        """Every worker heard from lately, by worker id, this one with its live numbers."""
        members = {wid: snap for wid, snap in self.peers.items() if now - snap.get("time", 0) <= FORGET_AFTER_S}
        members[self.worker_id] = local
        return members

    def cluster(self, local: dict[str, Any], now: float) -> dict[str, Any]:
        """The totals of every worker heard from lately, and each worker's share of them."""
        members = self.members(local, now)
        merged = merge(members.values(), self.declared_stops())
        totals = {name: stop["received"] for name, stop in merged["stops"].items()}
        everything = sum(totals.values())
        workers = {}
        for wid, snap in sorted(members.items()):
            age = max(now - snap.get("time", 0), 0.0)
            received = {name: stop.get("received", 0) for name, stop in snap.get("stops", {}).items()}
            workers[wid] = {
                "url": snap.get("url"),
                "age_s": round(age, 1),
                "stale": age > STALE_AFTER_S,
                "this": wid == self.worker_id,
                "received": sum(received.values()),
                "share": _share(sum(received.values()), everything),
                "stops": {name: {"received": n, "share": _share(n, totals[name])} for name, n in received.items()},
            }
        return {**view(merged), "workers": workers}

    def declared_stops(self) -> set[str]:
        """Every stop of the bus, run here or not (the busdriver too), and the external ones of the settings."""
        return {*self.bus.stops, *self.bus.agents, *self.settings.external_stops}

    async def find(self, message_id: str) -> dict[str, Any] | None:
        """A message's fate: from this worker's store, else (or when here it is only in transit) from the others'."""
        local = self.fates.get(message_id)
        if local is not None and local["status"] not in ON_THE_WAY:
            return local
        now = time.time()
        urls = {
            snap["url"]
            for snap in self.peers.values()
            if snap.get("url") and snap["url"] != self.url and now - snap.get("time", 0) <= STALE_AFTER_S
        }
        answers = [local]
        if urls:
            timeout = aiohttp.ClientTimeout(total=ASK_PEERS_TIMEOUT_S)
            guard = getattr(self.app, "web_guard", None)  # METROBUS_WEB_AUTH=all: peers want the token too
            headers = guard.peer_headers() if guard is not None else {}
            async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
                answers += await asyncio.gather(*(_ask(session, url, message_id) for url in sorted(urls)))
        known = [answer for answer in answers if answer]
        if not known:
            return None
        # A terminal fate wins over any in-transit (or retrying, compensating) one; among those, the latest.
        return max(known, key=lambda fate: (fate.get("status") not in ON_THE_WAY, fate.get("time", 0)))

    # --- the worker's task ----------------------------------------------------------------

    async def run(self) -> None:
        """Publish and read the stats and fates topics until the worker stops."""
        self.bus.stats.declare(self.bus.stop_agents())  # in the metrics too from the start
        topics = [self.stats_topic_name] + ([self.fates_topic_name] if self.settings.fates_max > 0 else [])
        for name in topics:
            await self.topic(name).maybe_declare()
        self._declared = True
        consumer = watch_consumer(self.settings)
        await consumer.start()
        try:
            await asyncio.gather(self._publish(), self._read(consumer, topics))
        finally:
            await consumer.stop()

    async def _publish(self) -> None:
        next_stats = 0.0
        while True:
            try:
                await self.publish_fates()
                self.fates.expire()
                self.forget_old_peers()
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + STATS_EVERY_S
                    await self.publish_stats()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker hiccup must not stop the watch
                log.warning("could not publish stats or fates: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(FATES_EVERY_S)

    async def publish_stats(self) -> None:
        """Send this worker's snapshot to the stats topic."""
        if not self._declared:
            return
        value = encode_json(self.snapshot())
        await self.app.producer.send(self.stats_topic_name, self.worker_id.encode(), value, None, None, None)

    async def publish_fates(self) -> None:
        """Hand the terminal fates recorded since the last call to the producer, for the fates topic.

        Through the bus's sender (batched and watched like the forwards, ``runtime/delivery.py``), not
        ``Topic.send``: these are plain records of a topic no agent consumes, and through the
        topic they cost about three times as much (7 % of a busy worker's CPU instead of
        2.3 %, ``bus_benchmark.py --profile``). The fates are handed over before every offset
        commit (``runtime/delivery.py`` calls this first), so once a commit is made the fates of the
        messages it covers are on the broker.
        """
        if self.settings.fates_max <= 0 or not self._declared:
            return
        # One publisher at a time, and a fate leaves ``_unsent`` only once sent: fates the
        # watch's loop took are sent before the commit hook's call returns (a send can wait
        # for a batch to go out), and those of a cancelled call by the next one.
        async with self._publishing:
            send, name, unsent = self.bus.sender, self.fates_topic_name, self._unsent
            while True:
                if not unsent:
                    value = self.fates.drain()
                    if value is None:
                        return
                    self._records_published += 1
                    unsent.append((self._own_records + str(self._records_published).encode(), value))
                key, value = unsent[0]
                await send(name, key, value)
                unsent.popleft()

    async def _read(self, consumer: AIOKafkaConsumer, topics: list[str]) -> None:
        partitions = await self._assign(consumer, topics)
        log.info("watching %s (%d partitions)", ", ".join(topics), len(partitions))
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                if tp.topic == self.stats_topic_name:
                    for record in records:
                        self.take_snapshot(record.key, record.value)
                else:
                    own = self._own_records
                    for record in records:
                        if not (record.key or b"").startswith(own):  # this run's own: in its store already
                            self.fates.load(record.key, record.value, record.timestamp / 1000)

    async def _assign(self, consumer: AIOKafkaConsumer, topics: list[str]) -> list[TopicPartition]:
        while True:
            found = await partitions_of(consumer, topics)
            if len(found) == len(topics):
                break
            await asyncio.sleep(1)
        partitions = [TopicPartition(name, p) for name in topics for p in sorted(found[name])]
        consumer.assign(partitions)
        fates = [tp for tp in partitions if tp.topic == self.fates_topic_name]
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(fates) if fates else {}
        # The store keeps the newest fates_max; a record holds one fate or more, and each
        # partition about an equal share of the records: older ones could not be kept anyway.
        newest = -(-self.settings.fates_max // max(len(fates), 1))
        for tp in partitions:
            start = max(starts[tp], ends[tp] - newest) if tp in ends else starts[tp]
            consumer.seek(tp, start)
        return partitions

    def forget_old_peers(self) -> None:
        """Leave out workers not heard from for ``FORGET_AFTER_S``."""
        horizon = time.time() - FORGET_AFTER_S
        for worker in [w for w, snap in self.peers.items() if snap.get("time", 0) < horizon]:
            del self.peers[worker]

    def take_snapshot(self, key: bytes | None, value: bytes | None) -> None:
        """Keep another worker's latest snapshot (a record without a value forgets it)."""
        if not key:
            return
        worker = key.decode(errors="replace")
        if worker == self.worker_id:
            return
        if value is None:
            self.peers.pop(worker, None)
            return
        try:
            snapshot = json.loads(value)
        except ValueError:
            log.warning("ignoring a stats snapshot of %s that is not JSON", worker)
            return
        if isinstance(snapshot, dict) and time.time() - snapshot.get("time", 0) <= FORGET_AFTER_S:
            self.peers[worker] = snapshot


async def _ask(session: aiohttp.ClientSession, url: str, message_id: str) -> dict[str, Any] | None:
    """Another worker's local answer for a message, or None (unknown there, or no answer in time)."""
    quoted = urllib.parse.quote(message_id, safe="")
    try:
        async with session.get(f"{url.rstrip('/')}/metrobus/messages/{quoted}?local=1") as response:
            if response.status != 200:
                return None
            answer = await response.json()
            return answer if isinstance(answer, dict) else None
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
