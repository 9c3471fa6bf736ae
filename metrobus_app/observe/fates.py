"""Where each message is, or where it ended and why: a bounded record of fates by message id.

The bus calls ``FateStore.record`` for every outcome (O(1): one ordered-dict update). A
message forwarded here is *in transit* to its next stop; a delivered, dropped or
dead-lettered one has a *terminal* fate, which is also queued for publishing on the
``<app id>-fates`` topic, so that every worker (which reads that topic into its own store
with ``load``) can answer for any message.

On that topic a record holds the fates of many messages (``drain`` makes one, ``fate_lines``
reads one): a line per fate, ``<record key as a JSON string> TAB <the fate as a JSON array>``
(a JSON text holds no raw tab or newline; ``decode_fate`` makes the array the fate's JSON
object, as ``/metrobus/messages`` shows it). A record per fate cost the worker three sends and
reads per message more than the message itself needed; a record of the older format, one
fate keyed by its message id, is still read.

Bounds: at most ``max_count`` records (the oldest go first) and none older than ``ttl_s``
seconds (swept every 0.5 s by the worker's watch task, and checked on every lookup). Fates
read from the topic are kept as the bytes that came in, decoded only when someone asks, so
100,000 of them take tens of MB.

A terminal fate is never replaced by an in-transit one (a message read again after a
rebalance does not "come back to life"). The copies of a fan-out share the message id; each
copy (``header.copy``) has a record of its own, and a lookup of the message lists them all.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from metrobus_app.wire.envelope import encode_json

if TYPE_CHECKING:
    from metrobus_app.wire.outcome import Outcome

IN_TRANSIT = "in_transit"
COPIED = "copied"
COPY_MARK = "#copy="  # the record of copy "2" of message "abc" is "abc#copy=2"
TERMINAL = ("delivered", "dropped", "dead_lettered")
MESSAGE_CHARS = 500
RECORD_BYTES = 128 * 1024  # of fates in one record of the fates topic (Kafka's default limit is 1 MiB)


# An entry is (time, terminal, what): ``what`` is a tuple for fates recorded here, the JSON
# bytes as published for fates read from the topic.
Entry = tuple[float, bool, Any]


class FateStore:
    """The fates of the last ``max_count`` messages of the last ``ttl_s`` seconds, by message id."""

    def __init__(self, max_count: int, ttl_s: float, worker: str = "", clock: Callable[[], float] = time.time) -> None:
        self.max_count = max_count
        self.ttl_s = ttl_s
        self.worker = worker
        self.clock = clock
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        # Terminal fates recorded here and not yet published; bounded like the store.
        self.pending: deque[tuple[str, tuple[Any, ...]]] = deque(maxlen=max(max_count, 1))
        self.evicted = 0
        # Message id -> the keys of its copies' records (fan-out), so a lookup can list them.
        self.copies: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    # --- the hot path -------------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """Observe one outcome (the bus calls this for every message): O(1), no I/O."""
        envelope = outcome.envelope
        if envelope is None:
            return
        header = envelope.header
        message_id = header.get("id")
        if not isinstance(message_id, str) or not message_id:
            return
        copy = header.get("copy")
        if copy:
            message_id = f"{message_id}{COPY_MARK}{copy}"
        now = outcome.received_at + outcome.elapsed
        hops = header.get("hops")
        if outcome.fate == "forwarded":
            entries = self.entries
            old = entries.get(message_id)
            entry = (now, False, (outcome.stop, outcome.detail, hops, self.worker))
            if old is None:
                self._put(message_id, entry)
            elif not old[1]:  # a later hop: the key is known and the store does not grow
                entries.move_to_end(message_id)
                entries[message_id] = entry
            return
        message = outcome.message[:MESSAGE_CHARS]
        what = (outcome.fate, outcome.stop, outcome.detail, message, hops, self.worker, outcome.received_at, now)
        self._put(message_id, (now, True, what))
        self.pending.append((message_id, what))  # encoded by ``drain``, off the message path

    def _put(self, key: str, entry: Entry) -> None:
        entries = self.entries
        if key in entries:
            entries.move_to_end(key)
        elif COPY_MARK in key:
            self.copies.setdefault(key.partition(COPY_MARK)[0], set()).add(key)
        entries[key] = entry
        while len(entries) > self.max_count:
            self._forget(entries.popitem(last=False)[0])
            self.evicted += 1

    def _forget(self, key: str) -> None:
        if COPY_MARK in key:
            message_id = key.partition(COPY_MARK)[0]
            keys = self.copies.get(message_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.copies[message_id]

    # --- publishing and reading the topic -----------------------------------------------

    def drain(self, max_bytes: int = RECORD_BYTES) -> bytes | None:
        """The oldest fates not yet published, about ``max_bytes`` of them, as one record value (None: none)."""
        lines: list[bytes] = []
        size, pending = 0, self.pending
        while pending and size < max_bytes:
            message_id, what = pending.popleft()
            line = orjson.dumps(message_id) + b"\t" + encode_json(what)
            lines.append(line)
            size += len(line) + 1
        return b"\n".join(lines) if lines else None

    def load(self, key: bytes | None, value: bytes | None, timestamp: float) -> None:
        """Take one record of the fates topic (``timestamp`` in seconds), unless it is too old."""
        if not value or timestamp < self.clock() - self.ttl_s:
            return
        entries = self.entries
        for message_id, fate in fate_lines(key, value):
            if not message_id:
                continue
            held = entries.get(message_id)
            if held is not None and held[1] and not isinstance(held[2], bytes):
                continue  # this worker's own terminal fate, come back from the topic: it has it already
            self._put(message_id, (timestamp, True, fate))

    def expire(self) -> int:
        """Forget fates older than ``ttl_s``; the oldest are first, so this stops at the first young one."""
        horizon = self.clock() - self.ttl_s
        entries, gone = self.entries, 0
        while entries:
            key = next(iter(entries))
            if entries[key][0] >= horizon:
                break
            del entries[key]
            self._forget(key)
            gone += 1
        self.evicted += gone
        return gone

    # --- asking ---------------------------------------------------------------------------

    def get(self, message_id: str) -> dict[str, Any] | None:
        """What is known of a message here, as JSON, or None; a fanned-out one lists its ``copies``."""
        fate = self._get(message_id)
        keys = self.copies.get(message_id)
        copies = [copy for copy in map(self._get, sorted(keys, key=_copy_order)) if copy] if keys else []
        if not copies:
            return fate
        fate = dict(fate) if fate is not None else {"id": message_id, "message": "", "worker": None, "hops": []}
        if fate.get("status", IN_TRANSIT) == IN_TRANSIT:
            fate.update(status=COPIED, time=max(copy.get("time", 0) for copy in copies))
            fate.setdefault("stop", None)
            fate.setdefault("detail", "")
        fate["copies"] = copies
        return fate

    def _get(self, key: str) -> dict[str, Any] | None:
        entry = self.entries.get(key)
        if entry is None or entry[0] < self.clock() - self.ttl_s:
            return None
        at, terminal, what = entry
        if isinstance(what, bytes):
            return decode_fate(key, what)
        if terminal:
            return _terminal(key, what)
        stop, next_stop, hops, worker = what
        message_id, _, copy = key.partition(COPY_MARK)
        return {
            "id": message_id,
            **({"copy": copy} if copy else {}),
            "status": IN_TRANSIT,
            "stop": next_stop,
            "detail": f"sent on to {next_stop} by {stop}",
            "message": "",
            "time": at,
            "worker": worker,
            "hops": list(hops) if isinstance(hops, list) else [],
        }


def fate_lines(key: bytes | None, value: bytes) -> Iterator[tuple[str, bytes]]:
    """The (record key of a message's fate, fate as JSON) pairs of one record of the fates topic.

    A record of the older format is one fate, keyed by its message's record key ("" for a
    record without a key). Lines that are not ``<JSON string> TAB <text>`` are skipped.
    """
    if value[:1] == b"{":
        yield (key or b"").decode(errors="replace"), value
        return
    for line in value.split(b"\n"):
        quoted, tab, fate = line.partition(b"\t")
        if not tab:
            continue
        try:
            message_id = orjson.loads(quoted)
        except orjson.JSONDecodeError:
            continue
        if isinstance(message_id, str) and message_id:
            yield message_id, fate


def decode_fate(key: str, body: bytes) -> dict[str, Any] | None:
    """A fate of the fates topic as JSON (``_terminal``), None if it is not one; ``key`` as ``fate_lines`` gives it."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, list) and len(value) == len(TERMINAL_FIELDS):
        return _terminal(key, tuple(value))
    return value if isinstance(value, dict) else None


def _copy_order(key: str) -> list[int]:
    """Copies in order: 1, 2, 2.1, 2.2, 10."""
    return [int(part) if part.isdigit() else 0 for part in key.partition(COPY_MARK)[2].split(".")]


TERMINAL_FIELDS = ("fate", "stop", "detail", "message", "hops", "worker", "received", "ended")


def _terminal(key: str, what: tuple[Any, ...]) -> dict[str, Any]:
    """A terminal fate as JSON, from what ``record`` keeps of it (``TERMINAL_FIELDS``)."""
    fate, stop, detail, message, hops, worker, received, ended = what
    last = {"stop": stop, "received": round(received, 6), "ended": round(ended, 6), "worker": worker, "fate": fate}
    message_id, _, copy = key.partition(COPY_MARK)
    return {
        "id": message_id,
        **({"copy": copy} if copy else {}),
        "status": fate,
        "stop": stop,
        "detail": detail,
        "message": message,
        "time": ended,
        "worker": worker,
        "hops": [*(hops if isinstance(hops, list) else []), last],
    }


def where(fate: dict[str, Any]) -> str:
    """One sentence for a person: where the message is, or where it ended and why."""
    status, stop, detail = fate.get("status"), fate.get("stop"), fate.get("detail")
    if fate.get("copies"):
        first = f"copied: {detail}" if status == COPIED and detail else "copied"
        return "; ".join([first, *(f"copy {copy.get('copy')}: {where(copy)}" for copy in fate["copies"])])
    if status == IN_TRANSIT:
        return f"in transit: {detail}; waiting at or being handled by {stop}"
    if status == "delivered":
        return f"delivered: its route ended at {stop}"
    if status == "dropped":
        return f"dropped at {stop}: {detail}"
    if status == "dead_lettered":
        message = fate.get("message")
        return f"dead-lettered at {stop}: {detail}" + (f": {message}" if message else "")
    return "unknown"
