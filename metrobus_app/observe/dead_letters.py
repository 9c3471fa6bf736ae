"""The dead letters: list them, choose some, and send them back to where they failed (``deadletters replay``).

``<app id>-replayed`` records which letters were sent back, so none is replayed twice.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from metrobus_app.config import Settings
from metrobus_app.runtime.clients import producer_options, read_topic
from metrobus_app.runtime.compat import ready_for_producer_ids
from metrobus_app.security.credentials import client_options
from metrobus_app.wire.envelope import ATTEMPTS, COMPENSATING, RETRY, encode_json, loads_or_none
from metrobus_app.wire.ids import REPLAY_COUNT_HEADER, REPLAY_ID_HEADER
from metrobus_app.wire.topics import replayed_topic


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
    done = {record.key for record in await read_topic(settings, replayed_topic(settings.app_id))}
    letters = []
    for record in await read_topic(settings, settings.error_topic):
        body = loads_or_none(record.value)
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
    header = envelope["header"]
    header["replays"] = replays
    for name in (ATTEMPTS, RETRY, COMPENSATING):  # a replay starts the failed stop's attempts again
        header.pop(name, None)
    return topic, encode_json(envelope), []


async def replay(settings: Settings, letters: list[DeadLetter]) -> None:
    """Send the letters' messages back, then mark each letter replayed (in that order: never lost)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.app_id}-replay",
        **producer_options(settings),
        **client_options(settings),
    )
    await ready_for_producer_ids(settings)
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
                replayed_topic(settings.app_id), json.dumps(mark).encode(), key=letter.position.encode()
            )
    finally:
        await producer.stop()
