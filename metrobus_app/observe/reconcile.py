"""Every message accounted for, from the topics themselves: ``reconcile`` a run.

- The **source topic** says what was pushed: each record's id is ``wire.ids.source_id`` of its
  place (a record replayed by ``deadletters replay`` carries its old id in a Kafka header and
  is not counted as pushed again).
- The **fates topic** (``<app id>-fates``, published by ``observe/cluster_view.py`` and before every offset
  commit, see ``runtime/delivery.py``) says how each message ended: delivered, dropped, dead-lettered,
  compensated, compensation failed or expired (``wire.outcome.TERMINAL``).
- ``<app id>-replayed`` records which dead letters were sent back (``dead_letters.py``), so a
  replayed message's second fate is not a duplicate.

pushed = delivered + dropped + dead-lettered + compensated + compensation failed + expired,
each message counted once by its last fate; a message with more fates than 1 + its replays
was processed more than once (at least once: after a crash, the messages in flight are
taken again) and is listed as a duplicate. The ends of recovery also put the message in the
dead-letter topic, but their fate is one (``compensated``, not also ``dead_lettered``): each
is counted once, under its own name, and ``dead_lettered`` stays the messages that failed
without compensation. Retrying and compensating are not ends: a message whose last fate
was one of them has no fate on the topic and is unaccounted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import ConsumerRecord

from metrobus_app.config.settings import Settings
from metrobus_app.observe.fates import decode_fate, fate_lines
from metrobus_app.runtime.clients import read_topic
from metrobus_app.wire.envelope import loads_or_none
from metrobus_app.wire.ids import REPLAY_ID_HEADER, kafka_header, source_id
from metrobus_app.wire.outcome import (
    COMPENSATED,
    COMPENSATION_FAILED,
    DEAD_LETTERED,
    DELIVERED,
    DROPPED,
    EXPIRED,
    TERMINAL,
)
from metrobus_app.wire.topics import fates_topic, replayed_topic


@dataclass
class Reconciliation:
    """What the topics say about every message pushed to the source topic."""

    pushed: int = 0
    replayed_records: int = 0
    fates: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    unaccounted: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    not_from_source: int = 0
    replays: int = 0

    @property
    def accounted(self) -> int:
        return sum(self.fates[fate] for fate in TERMINAL)

    @property
    def balanced(self) -> bool:
        return not self.unaccounted and self.accounted == self.pushed

    def as_dict(self) -> dict[str, Any]:
        return {
            "pushed": self.pushed,
            "delivered": self.fates[DELIVERED],
            "dropped": self.fates[DROPPED],
            "dead_lettered": self.fates[DEAD_LETTERED],
            "compensated": self.fates[COMPENSATED],
            "compensation_failed": self.fates[COMPENSATION_FAILED],
            "expired": self.fates[EXPIRED],
            "accounted": self.accounted,
            "unaccounted": len(self.unaccounted),
            "unaccounted_ids": self.unaccounted[:100],
            "duplicates": len(self.duplicates),
            "duplicate_fates": sum(self.duplicates.values()),
            "duplicate_ids": dict(sorted(self.duplicates.items())[:100]),
            "replays": self.replays,
            "replayed_records": self.replayed_records,
            "not_from_source": self.not_from_source,
            "reasons": {fate: dict(counts) for fate, counts in self.reasons.items()},
            "balanced": self.balanced,
        }

    def lines(self) -> list[str]:
        def by(fate: str) -> str:
            counts = self.reasons.get(fate)
            return f"  ({', '.join(f'{k}: {v}' for k, v in counts.most_common())})" if counts else ""

        out = [
            f"pushed:        {self.pushed}"
            + (f"  (+{self.replayed_records} replayed)" if self.replayed_records else ""),
            f"delivered:     {self.fates['delivered']}",
            f"dropped:       {self.fates['dropped']}{by('dropped')}",
            f"dead-lettered: {self.fates['dead_lettered']}{by('dead_lettered')}",
            *(
                f"{label:<15}{self.fates[fate]}{by(fate)}  (dead-lettered too)"
                for fate, label in (
                    (COMPENSATED, "compensated:"),
                    (COMPENSATION_FAILED, "undo failed:"),
                    (EXPIRED, "expired:"),
                )
                if self.fates[fate]
            ),
            f"accounted for: {self.accounted} of {self.pushed}; unaccounted: {len(self.unaccounted)}"
            + (f" (first: {', '.join(self.unaccounted[:5])})" if self.unaccounted else ""),
            f"duplicates:    {len(self.duplicates)} messages had {sum(self.duplicates.values())} fates more than once"
            + (
                f" ({', '.join(f'{k} x{v + 1}' for k, v in sorted(self.duplicates.items())[:10])})"
                if self.duplicates
                else ""
            ),
        ]
        if self.replays:
            out.append(f"replays:       {self.replays} dead letters were sent back (their later fate counts)")
        if self.not_from_source:
            out.append(
                f"not from the source topic: {self.not_from_source} messages with a fate (put on a stop's topic)"
            )
        return out


def reconcile(
    source: Iterable[ConsumerRecord], fates: Iterable[ConsumerRecord], replayed: Iterable[ConsumerRecord]
) -> Reconciliation:
    """Match the source topic's records with the fates topic's, counting replays and duplicates."""
    result = Reconciliation()
    pushed: set[str] = set()
    for record in source:
        if kafka_header(record.headers, REPLAY_ID_HEADER):
            result.replayed_records += 1
            continue
        pushed.add(source_id(record.topic, record.partition, record.offset, record.timestamp))
    result.pushed = len(pushed)
    replays: Counter[str] = Counter()
    for record in replayed:
        entry = loads_or_none(record.value)
        if isinstance(entry, dict) and entry.get("id"):
            replays[entry["id"]] += 1
    result.replays = sum(replays.values())
    ended: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in fates:
        for key, line in fate_lines(record.key, record.value or b""):
            fate = decode_fate(key, line)
            if isinstance(fate, dict) and fate.get("status") in TERMINAL and isinstance(fate.get("id"), str):
                ended[fate["id"]].append(fate)
    for message_id, its in ended.items():
        if message_id not in pushed:
            result.not_from_source += 1
            continue
        # Fan-out copies of one message each end on their own; only repeats of one copy are duplicates.
        by_copy: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for fate in its:
            by_copy[str(fate.get("copy", ""))].append(fate)
        last = by_copy[min(by_copy)][-1]
        result.fates[last["status"]] += 1
        if last["status"] != DELIVERED:
            result.reasons[last["status"]][str(last.get("detail", ""))] += 1
        extra = sum(len(copies) - 1 for copies in by_copy.values()) - replays[message_id]
        if extra > 0:
            result.duplicates[message_id] = extra
    result.unaccounted = sorted(pushed - ended.keys())
    return result


async def reconcile_topics(settings: Settings) -> Reconciliation:
    return reconcile(
        await read_topic(settings, settings.source_topic),
        await read_topic(settings, fates_topic(settings.app_id)),
        await read_topic(settings, replayed_topic(settings.app_id)),
    )
