"""Every message accounted for, from the topics themselves: reconcile a run, list and replay dead letters.

- The **source topic** says what was pushed: each record's id is ``safety.source_id`` of its
  place (a record replayed by ``deadletters replay`` carries its old id in a Kafka header and
  is not counted as pushed again).
- The **fates topic** (``<app id>-fates``, published by ``watch.py`` and before every offset
  commit, see ``delivery.py``) says how each message ended: delivered, dropped, dead-lettered.
- The **dead-letter topic** holds the letters; ``<app id>-replayed`` records which letters were
  sent back, so none is replayed twice and a replayed message's second fate is not a duplicate.

pushed = delivered + dropped + dead-lettered, each message counted once by its last fate;
a message with more fates than 1 + its replays was processed more than once (at least once:
after a crash, the messages in flight are taken again) and is listed as a duplicate.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from .credentials import client_options
from .envelope import encode_json
from .fates import decode_fate, fate_lines, fates_topic
from .plain_clients import partitions_of, plain_consumer
from .safety import REPLAY_COUNT_HEADER, REPLAY_ID_HEADER, kafka_header, source_id
from .settings import Settings

TERMINAL = ("delivered", "dropped", "dead_lettered")


def replayed_topic(settings: Settings) -> str:
    return f"{settings.app_id}-replayed"


async def read_topic(settings: Settings, topic: str) -> list[ConsumerRecord]:
    """Every record of ``topic`` (all partitions, from the start; empty if there is no such topic).

    The end offsets the broker reports are not trusted alone (the embedded broker's can be short
    by a batch): reading stops at an empty fetch once every partition is past its end offset.
    """
    consumer = plain_consumer(settings, "accounting", min_wait_ms=200)
    await consumer.start()
    try:
        found = (await partitions_of(consumer, [topic])).get(topic)
        if not found:
            return []
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        while True:
            batches = await consumer.getmany(timeout_ms=300, max_records=50_000)
            for batch in batches.values():
                records.extend(batch)
            if not batches:
                positions = [await consumer.position(tp) for tp in partitions]
                if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                    return records
    finally:
        await consumer.stop()


def _json(value: bytes | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


# --- reconcile -----------------------------------------------------------------------------


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
            "delivered": self.fates["delivered"],
            "dropped": self.fates["dropped"],
            "dead_lettered": self.fates["dead_lettered"],
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
        entry = _json(record.value)
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
        if last["status"] != "delivered":
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
        await read_topic(settings, replayed_topic(settings)),
    )


# --- dead letters --------------------------------------------------------------------------


@dataclass
class DeadLetter:
    """One record of the dead-letter topic and where it is."""

    partition: int
    offset: int
    key: bytes | None
    body: dict[str, Any]
    replayed: bool = False

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def replayable(self) -> bool:
        # Letters written before replay existed have no "topic"; they cannot be sent back.
        return bool(self.body.get("replayable")) and bool(self.body.get("topic")) and "value" in self.body


async def dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every dead letter, marked when ``deadletters replay`` already sent it back."""
    done = {record.key for record in await read_topic(settings, replayed_topic(settings))}
    letters = []
    for record in await read_topic(settings, settings.error_topic):
        body = _json(record.value)
        if not isinstance(body, dict):
            body = {"stop": "?", "error": "unreadable letter", "message": ""}
        letter = DeadLetter(record.partition, record.offset, record.key, body)
        letter.replayed = f"{letter.position}".encode() in done
        letters.append(letter)
    return letters


def choose(
    letters: Iterable[DeadLetter],
    *,
    stop: str | None = None,
    error: str | None = None,
    ids: Iterable[str] = (),
    include_replayed: bool = False,
) -> list[DeadLetter]:
    """The letters that match every filter given."""
    wanted = set(ids)
    return [
        letter
        for letter in letters
        if (include_replayed or not letter.replayed)
        and (stop is None or letter.body.get("stop") == stop)
        and (error is None or letter.body.get("error") == error)
        and (not wanted or letter.body.get("id") in wanted)
    ]


def summary(letters: Iterable[DeadLetter]) -> list[tuple[str, str, int, int, str]]:
    """(stop, error, count, replayable, an example message) per stop and error, most first."""
    groups: dict[tuple[str, str], list[DeadLetter]] = defaultdict(list)
    for letter in letters:
        groups[(str(letter.body.get("stop")), str(letter.body.get("error")))].append(letter)
    rows = [
        (stop, error, len(its), sum(1 for x in its if x.replayable), str(its[-1].body.get("message", ""))[:100])
        for (stop, error), its in groups.items()
    ]
    return sorted(rows, key=lambda row: (-row[2], row[0], row[1]))


@dataclass
class ReplayReport:
    replayed: list[DeadLetter] = field(default_factory=list)
    over_limit: list[DeadLetter] = field(default_factory=list)
    not_replayable: list[DeadLetter] = field(default_factory=list)


def plan_replay(letters: Iterable[DeadLetter], max_replays: int) -> ReplayReport:
    """Which of the chosen letters can go back: replayable and replayed fewer than ``max_replays`` times."""
    report = ReplayReport()
    for letter in letters:
        if not letter.replayable:
            report.not_replayable.append(letter)
        elif int(letter.body.get("replays") or 0) >= max_replays:
            report.over_limit.append(letter)
        else:
            report.replayed.append(letter)
    return report


def replay_record(letter: DeadLetter, settings: Settings) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """(topic, value, Kafka headers) that send a letter's message back to where it failed.

    An envelope goes back to its stop's topic as it was, route and history intact, with
    ``header.replays`` one more; a raw record goes back to the source topic with its id and
    replay count in Kafka headers (a raw record has no header of its own).
    """
    body = letter.body
    topic, value, replays = body["topic"], body["value"], int(body.get("replays") or 0) + 1
    if topic == settings.source_topic:
        headers = [(REPLAY_ID_HEADER, str(body.get("id") or "").encode()), (REPLAY_COUNT_HEADER, str(replays).encode())]
        return topic, value.encode(), headers
    envelope = json.loads(value)
    envelope["header"]["replays"] = replays
    return topic, encode_json(envelope), []


async def replay(settings: Settings, letters: list[DeadLetter]) -> None:
    """Send the letters' messages back, then mark each letter replayed (in that order: never lost)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.app_id}-replay",
        acks="all",
        **client_options(settings),
    )
    await producer.start()
    try:
        for letter in letters:
            topic, value, headers = replay_record(letter, settings)
            await producer.send_and_wait(topic, value, key=letter.key, headers=headers)
            mark = {
                "id": letter.body.get("id"),
                "to": topic,
                "time": time.time(),
                "replays": letter.body.get("replays"),
            }
            await producer.send_and_wait(
                replayed_topic(settings), json.dumps(mark).encode(), key=letter.position.encode()
            )
    finally:
        await producer.stop()
