"""Did the bus double, reorder or leave a transaction open? The stop topics, as ``read_committed`` readers see them.

``reconcile`` says whether every pushed message has a fate; this says what a downstream reader
of each stop's topic saw (``faust -A metrobus_app reconcile --topics``), the checks Apache
Kafka's own exactly-once verifier makes:

- **duplicates**: one arrival of a message at a topic is its id, fan-out copy, how far it had
  gone (``historical_route``'s length), how many hops it had made (retries and compensations add
  hops) and how often it was replayed; the same arrival twice is a duplicate. Processing a
  record again after a crash makes the same arrival again, whatever the times in it.
- **order per key**: the records of one key come from one source partition, in its offsets'
  order; at each topic a key's arrivals (first arrivals only) must be in that order. A message
  that waited for a retry may be overtaken by design (docs/recovery.md), so a key's order is
  checked among its messages that have not failed an attempt at that point.
- **open transactions**: a partition whose ``read_committed`` end (last stable offset) is below
  its log end has a transaction still open: its records are invisible to such readers.

Limits: only messages that came from the source topic are ordered (their id names their
place); on a broker that shows aborted transactions to ``read_committed`` readers (Tansu),
duplicates are what it shows, not what Kafka would.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import ConsumerRecord

from metrobus_app.config.settings import Settings
from metrobus_app.runtime.clients import end_offsets, read_topic
from metrobus_app.wire.envelope import HISTORICAL_ROUTE, HOPS, REPLAYS, loads_or_none
from metrobus_app.wire.ids import source_id
from metrobus_app.wire.steps import COPY


@dataclass
class TopicAudit:
    """What a ``read_committed`` reader of one topic saw."""

    records: int = 0
    messages: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)
    out_of_order: list[str] = field(default_factory=list)
    open_partitions: dict[int, int] = field(default_factory=dict)  # partition -> records after its stable end

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "messages": self.messages,
            "duplicates": len(self.duplicates),
            "duplicate_ids": dict(sorted(self.duplicates.items())[:20]),
            "out_of_order": len(self.out_of_order),
            "out_of_order_ids": self.out_of_order[:20],
            "open_transactions": len(self.open_partitions),
            "open_partitions": self.open_partitions,
        }


def arrival(header: Mapping[str, Any]) -> tuple[Any, ...]:
    """What names one arrival of a message at a topic (see the module docstring)."""
    history, hops = header.get(HISTORICAL_ROUTE), header.get(HOPS)
    return (
        header.get("id"),
        header.get(COPY),
        len(history) if isinstance(history, list) else None,
        len(hops) if isinstance(hops, list) else None,
        header.get(REPLAYS),
    )


def failed_before(header: Mapping[str, Any]) -> bool:
    """Whether the message has failed an attempt somewhere (its hops say so)."""
    hops = header.get(HOPS)
    return isinstance(hops, list) and any(isinstance(hop, dict) and "attempt" in hop for hop in hops)


def source_places(source: Iterable[ConsumerRecord]) -> dict[str, tuple[int, int]]:
    """Message id -> (partition, offset) of the source record it came from."""
    return {
        source_id(record.topic, record.partition, record.offset, record.timestamp): (record.partition, record.offset)
        for record in source
    }


def audit_topic(
    records: Iterable[ConsumerRecord], places: Mapping[str, tuple[int, int]], open_partitions: Mapping[int, int]
) -> TopicAudit:
    """Duplicates and order per key among ``records`` (a topic read in partition order)."""
    audit = TopicAudit(open_partitions=dict(open_partitions))
    seen: Counter[tuple[Any, ...]] = Counter()
    last_by_key: dict[tuple[int, bytes | None], tuple[int, int]] = {}
    ids: set[Any] = set()
    for record in records:
        audit.records += 1
        envelope = loads_or_none(record.value)
        header = envelope.get("header") if isinstance(envelope, dict) else None
        if not isinstance(header, dict):
            continue
        here = arrival(header)
        seen[here] += 1
        ids.add(here[0])
        if seen[here] > 1:
            audit.duplicates[str(here[0])] = seen[here] - 1
            continue
        place = places.get(header.get("id"))  # type: ignore[arg-type]
        if place is None or failed_before(header):
            continue
        key = (record.partition, record.key)
        before = last_by_key.get(key)
        if before is not None and before[0] == place[0] and place[1] < before[1]:
            audit.out_of_order.append(str(header.get("id")))
        last_by_key[key] = place
    audit.messages = len(ids)
    return audit


@dataclass
class Audit:
    """Every audited topic's ``TopicAudit``."""

    topics: dict[str, TopicAudit] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not any(t.duplicates or t.out_of_order or t.open_partitions for t in self.topics.values())

    def as_dict(self) -> dict[str, Any]:
        return {"clean": self.clean, **{topic: audit.as_dict() for topic, audit in self.topics.items()}}

    def lines(self) -> list[str]:
        out = ["read_committed, per topic: records, messages, duplicates, out of order per key, open transactions"]
        for topic, a in self.topics.items():
            out.append(
                f"  {topic:<20} {a.records:>8} {a.messages:>8} {len(a.duplicates):>6} {len(a.out_of_order):>6}"
                f" {len(a.open_partitions):>4}"
                + (f"  (twice: {', '.join(sorted(a.duplicates)[:3])})" if a.duplicates else "")
            )
        return out


def open_transactions(stable_ends: Mapping[int, int], log_ends: Mapping[int, int]) -> dict[int, int]:
    """Partition -> records past its last stable offset, for partitions where a transaction is open."""
    return {p: log_ends[p] - end for p, end in sorted(stable_ends.items()) if log_ends.get(p, end) > end}


def group_by_partition(records: Iterable[ConsumerRecord]) -> list[ConsumerRecord]:
    """Records in partition order, each partition's in offset order."""
    by: dict[int, list[ConsumerRecord]] = defaultdict(list)
    for record in records:
        by[record.partition].append(record)
    return [record for p in sorted(by) for record in sorted(by[p], key=lambda r: r.offset)]


async def audit_topics(settings: Settings, topics: Iterable[str]) -> Audit:
    """Read the source topic and each of ``topics`` as ``read_committed`` and audit them."""
    places = source_places(await read_topic(settings, settings.source_topic, committed_only=True))
    audit = Audit()
    for topic in topics:
        stable = await end_offsets(settings, topic, committed_only=True)
        log_ends = await end_offsets(settings, topic, committed_only=False)
        records = group_by_partition(await read_topic(settings, topic, committed_only=True))
        audit.topics[topic] = audit_topic(records, places, open_transactions(stable, log_ends))
    return audit
