"""Where each message is, or where it ended and why: a bounded record of fates by message id.

The bus calls ``FateStore.record`` for every outcome (O(1): one ordered-dict update). A
message forwarded here is *in transit* to its next stop, and so is one ``retrying`` (in
place, or waiting in a delay topic until due) or ``compensating`` (failed for good; the
stops done are being undone): these are kept here only, each replaced by the next. One
that ended (``wire.outcome.TERMINAL``: delivered, dropped, dead-lettered, compensated,
compensation failed, expired) has a *terminal* fate, which is also queued for publishing
on the ``<app id>-fates`` topic, so that every worker (which reads that topic into its own
store with ``load``) can answer for any message.

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
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from metrobus_app.wire.envelope import ATTEMPTS, COMPENSATING, RETRY, encode_json
from metrobus_app.wire.outcome import (
    COMPENSATED,
    COMPENSATION_FAILED,
    DEAD_LETTERED,
    DELIVERED,
    DROPPED,
    EXPIRED,
    FORWARDED,
    RETRYING,
)
from metrobus_app.wire.outcome import COMPENSATING as COMPENSATING_FATE

if TYPE_CHECKING:
    from metrobus_app.wire.outcome import Outcome

IN_TRANSIT = "in_transit"
COPIED = "copied"
COPY_MARK = "#copy="  # the record of copy "2" of message "abc" is "abc#copy=2"
#: The statuses of a message on its way (not ended): a later fate replaces them.
ON_THE_WAY = (IN_TRANSIT, RETRYING, COMPENSATING_FATE)
IN_PLACE = "in place"  # a retrying outcome's detail when the stop tries again itself; else the delay topic
# What the bus's retrying outcome says: "attempt 2 of 5 failed: <error>; next in place" or "...; next due at <when>".
RETRY_MESSAGE = re.compile(r"attempt (\d+) of (\d+) failed: (.*?)(?:; next (?:in place|due at (\S+)))?\s*$", re.S)
MESSAGE_CHARS = 500
RECORD_BYTES = 128 * 1024  # of fates in one record of the fates topic (Kafka's default limit is 1 MiB)


# An entry is (time, terminal, what): ``what`` is a tuple for fates recorded here, the JSON
# bytes as published for fates read from the topic. In transit, ``what`` is (stop, detail,
# hops, worker), and for a retrying or compensating message also (fate, message, more):
# ``more`` is what its header said (``_retry_header``, ``_compensation_header``).
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
        fate = outcome.fate
        what: tuple[Any, ...]
        if fate == FORWARDED and COMPENSATING not in header:  # most outcomes: inline, no call
            entries = self.entries
            old = entries.get(message_id)
            entry = (now, False, (outcome.stop, outcome.detail, hops, self.worker))
            if old is None:
                self._put(message_id, entry)
            elif not old[1]:  # a later hop: the key is known and the store does not grow
                entries.move_to_end(message_id)
                entries[message_id] = entry
            return
        if fate == FORWARDED:
            told = header.get(COMPENSATING)
            if not isinstance(told, dict):
                self._on_the_way(message_id, (now, False, (outcome.stop, outcome.detail, hops, self.worker)))
                return
            # sent on to the next stop to undo: still compensating, for the failure it tells
            story, message = _compensation_header(header), str(told.get("message") or "")[:MESSAGE_CHARS]
            what = (outcome.stop, str(told.get("error") or ""), hops, self.worker, COMPENSATING_FATE, message, story)
            self._on_the_way(message_id, (now, False, what))
            return
        message = outcome.message[:MESSAGE_CHARS]
        if fate in (RETRYING, COMPENSATING_FATE):
            more = _retry_header(header) if fate == RETRYING else _compensation_header(header)
            what = (outcome.stop, outcome.detail, hops, self.worker, fate, message, more)
            self._on_the_way(message_id, (now, False, what))
            return
        what = (fate, outcome.stop, outcome.detail, message, hops, self.worker, outcome.received_at, now)
        if fate in RECOVERY_ENDS:
            # Which stop failed, and what was undone (a ninth field): from the header, else
            # from what this store kept while the message was being compensated.
            told = _compensation_header(header)
            if told is None:
                held = self.entries.get(message_id)
                if held is not None and not held[1] and len(held[2]) == 7 and held[2][4] == COMPENSATING_FATE:
                    told = held[2][6]
                    if fate == COMPENSATED and told is not None and outcome.stop not in told[3]:
                        told = [*told[:3], [*told[3], outcome.stop]]  # the stop that ended it undid its part last
            if told is not None:
                what = (*what, told)
        self._put(message_id, (now, True, what))
        self.pending.append((message_id, what))  # encoded by ``drain``, off the message path

    def _on_the_way(self, message_id: str, entry: Entry) -> None:
        """Keep an in-transit fate, unless the message already ended."""
        entries = self.entries
        old = entries.get(message_id)
        if old is None:
            self._put(message_id, entry)
        elif not old[1]:  # a later hop: the key is known and the store does not grow
            entries.move_to_end(message_id)
            entries[message_id] = entry

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
        if fate.get("status", IN_TRANSIT) in ON_THE_WAY:
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
        message_id, _, copy = key.partition(COPY_MARK)
        fate: dict[str, Any] = {"id": message_id, **({"copy": copy} if copy else {})}
        if len(what) == 4:
            stop, next_stop, hops, worker = what
            fate.update(status=IN_TRANSIT, stop=next_stop, detail=f"sent on to {next_stop} by {stop}", message="")
        else:
            stop, detail, hops, worker, status, message, more = what
            fate.update(status=status, stop=stop, detail=detail, message=message)
            fate.update(_retry(stop, detail, message, more) if status == RETRYING else _story(more))
        return {**fate, "time": at, "worker": worker, "hops": list(hops) if isinstance(hops, list) else []}


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
    if isinstance(value, list) and len(value) in (len(TERMINAL_FIELDS), len(TERMINAL_FIELDS) + 1):
        return _terminal(key, tuple(value))
    return value if isinstance(value, dict) else None


def _copy_order(key: str) -> list[int]:
    """Copies in order: 1, 2, 2.1, 2.2, 10."""
    return [int(part) if part.isdigit() else 0 for part in key.partition(COPY_MARK)[2].split(".")]


TERMINAL_FIELDS = ("fate", "stop", "detail", "message", "hops", "worker", "received", "ended")
#: The ends of compensation and deadlines; their fate has a ninth field when the message was
#: being compensated: [stop that failed, error type, error text, stops undone] (``_compensation_header``).
RECOVERY_ENDS = (COMPENSATED, COMPENSATION_FAILED, EXPIRED)


def _terminal(key: str, what: tuple[Any, ...]) -> dict[str, Any]:
    """A terminal fate as JSON, from what ``record`` keeps of it (``TERMINAL_FIELDS``, and the story if any)."""
    fate, stop, detail, message, hops, worker, received, ended = what[:8]
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
        **(_story(what[8]) if len(what) > 8 else {}),
    }


def _retry_header(header: dict[str, Any]) -> tuple[Any, ...] | None:
    """(failed tries so far, next attempt, of, due) as the header says, for a retrying message; None: not said."""
    attempts = header.get(ATTEMPTS)
    retry = header.get(RETRY)
    if isinstance(retry, dict):
        return (attempts, retry.get("attempt"), retry.get("of"), retry.get("due"), retry.get("stop"))
    return None if attempts is None else (attempts, None, None, None, None)


def _retry(stop: str, detail: str, message: str, more: tuple[Any, ...] | None) -> dict[str, Any]:
    """A retrying message's ``attempt`` (the next one), ``of``, ``due`` (ISO, UTC) and ``error``.

    From its header when it said them (``more``), else from the outcome's message.
    """
    failed, attempt, of, due, retry_stop = more if more is not None else (None, None, None, None, None)
    said = RETRY_MESSAGE.match(message or "")
    if said:
        failed = failed if isinstance(failed, int) else int(said[1])
        of = of if isinstance(of, int) else int(said[2])
        due = due if due is not None else said[4]
    if not isinstance(attempt, int) and isinstance(failed, int):
        attempt = failed + 1
    if isinstance(due, (int, float)) and not isinstance(due, bool):
        due = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
    return {
        "stop": retry_stop if isinstance(retry_stop, str) and retry_stop else stop,
        "attempt": attempt if isinstance(attempt, int) else None,
        "of": of if isinstance(of, int) else None,
        "due": due if isinstance(due, str) and detail != IN_PLACE else None,
        "error": said[3] if said else None,
    }


def _compensation_header(header: dict[str, Any]) -> list[Any] | None:
    """[stop that failed, error type, error text, stops undone so far] of a message being compensated."""
    told = header.get(COMPENSATING)
    if not isinstance(told, dict):
        return None
    undone = told.get("undone")
    return [told.get("stop"), told.get("error"), told.get("message"), list(undone) if isinstance(undone, list) else []]


def _story(told: Any) -> dict[str, Any]:
    """``failed_at``, ``error``, ``error_message`` and ``undone`` of a compensated message, as JSON."""
    if not isinstance(told, (list, tuple)) or len(told) != 4:
        return {}
    stop, error, message, undone = told
    return {"failed_at": stop, "error": error, "error_message": message, "undone": list(undone or [])}


def where(fate: dict[str, Any]) -> str:
    """One sentence for a person: where the message is, or where it ended and why."""
    status, stop, detail = fate.get("status"), fate.get("stop"), fate.get("detail")
    message = fate.get("message")
    if fate.get("copies"):
        first = f"copied: {detail}" if status == COPIED and detail else "copied"
        return "; ".join([first, *(f"copy {copy.get('copy')}: {where(copy)}" for copy in fate["copies"])])
    if status == IN_TRANSIT:
        return f"in transit: {detail}; waiting at or being handled by {stop}"
    if status == DELIVERED:
        return f"delivered: its route ended at {stop}"
    if status == DROPPED:
        return f"dropped at {stop}: {detail}"
    if status == DEAD_LETTERED:
        return f"dead-lettered at {stop}: {detail}" + (f": {message}" if message else "")
    if status == RETRYING:
        return _where_retrying(fate)
    failed = _failure(fate)
    undone = fate.get("undone")
    undone_text = f"; undone: {', '.join(undone)}" if undone else ""
    if status == COMPENSATING_FATE:
        return f"compensating after {failed}; undoing the stops done before, newest first{undone_text}"
    if status == COMPENSATED:
        if not fate.get("failed_at"):  # the stop that failed is not known here, only the last one undone
            error = f"{detail}: {message}" if detail and message else detail or message
            return f"compensated after {error or 'a failure'}; the last stop undone: {stop}; dead-lettered"
        return f"compensated after {failed}{undone_text}; dead-lettered"
    if status == COMPENSATION_FAILED:
        after = f" (after {failed})" if fate.get("failed_at") else ""
        return f"compensation failed at {stop}: {message or detail}{after}{undone_text}; dead-lettered"
    if status == EXPIRED:
        return f"expired at {stop}: {message or detail}{undone_text}; dead-lettered"
    return "unknown"


def _failure(fate: dict[str, Any]) -> str:
    """ "AddEmail failed: TimeoutError: lookup timed out", from the story if known, else the fate."""
    if fate.get("failed_at"):
        error, text = fate.get("error"), fate.get("error_message")
        stop = fate["failed_at"]
    else:
        stop, error, text = fate.get("stop"), fate.get("detail"), fate.get("message")
    return f"{stop} failed" + (f": {error}" if error else "") + (f": {text}" if text else "")


def _where_retrying(fate: dict[str, Any]) -> str:
    attempt, of, due, error = fate.get("attempt"), fate.get("of"), fate.get("due"), fate.get("error")
    count = f"attempt {attempt}" + (f" of {of}" if of else "") if attempt else ""
    failed = f"; attempt {attempt - 1} failed: {error}" if attempt and error else ""
    if fate.get("detail") == IN_PLACE:
        return f"retrying at {fate.get('stop')} in place" + (f" ({count})" if count else "") + failed
    when = ", ".join(part for part in (count, f"due at {due}" if due else "") if part)
    topic = f" in {fate.get('detail')}" if fate.get("detail") else ""
    return f"waiting to retry {fate.get('stop')}" + (f" ({when})" if when else "") + topic + failed
