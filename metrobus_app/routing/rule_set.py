"""Route rules in the bus: one rule set every worker holds, changed at runtime, read by the busdriver.

The rule set is stored as one JSON document under one key of a cache of its own,
``route_rules`` (changelog ``<app id>-route_rules-changelog``): every worker tails it like
the lookup caches (``caches/loader.py``), so a change reaches every worker within a second or
so, without a restart. One document, not one key per rule: a change is atomic and the order
of the rules (first match wins) is part of it. Its revision is its changelog offset + 1.

Which rules route a record, in order of precedence:

1. the rule set stored in the bus (by ``faust -A metrobus_app routes ...`` or the web view);
2. when none is stored (never, or after ``routes reset``), the busdriver's rules file.

The busdriver looks at the stored offset on every record (an integer compare) and compiles
the rules again only when it moved. A stored rule set this worker cannot use (a stop it
does not know yet, during a rolling upgrade) is refused with an error in the log, and the
rules in use stay. Every write goes through ``RuleEditor``, which validates first: an
invalid change is refused with the reason and the stored rules stay as they were.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from metrobus_app.caches.cache import Cache
from metrobus_app.caches.loader import CacheLoader, changelog_consumer
from metrobus_app.routing.language import (
    META_KEYS,
    RuleError,
    RuleSet,
    compile_rules,
    load_file,
    normalize,
    normalize_rule,
    put_rule,
    remove_rule,
    set_default,
)
from metrobus_app.wire.envelope import Envelope
from metrobus_app.wire.steps import Step, stamp

if TYPE_CHECKING:
    from faust.types import ProducerT

    from metrobus_app.config.settings import Settings
    from metrobus_app.core.bus import Bus

log = logging.getLogger("metrobus.routes")

KEY = b"rules"
CACHE_NAME = "route_rules"
APPLY_TIMEOUT = 10.0

_declared: weakref.WeakKeyDictionary[Bus, RouteRules] = weakref.WeakKeyDictionary()


class RouteRules:
    """The route rules of one bus: the stored rule set, else the rules file.

    ``RouteRules.declare(bus, Path("routes.toml"))`` in the busdriver's module; the busdriver
    then returns ``await rules.route(record)``. Declaring also adds the ``routes`` command
    and the ``/metrobus/routes/`` web view.
    """

    def __init__(self, bus: Bus, file: Path) -> None:
        self.bus = bus
        self.file = file
        self.cache = Cache(CACHE_NAME, f"{bus.settings.app_id}-{CACHE_NAME}-changelog", "the bus's route rules")
        self.source = "file"
        self.revision = 0
        self.refused: str | None = None
        self._offset = -2  # the store offset the rules in use were chosen at
        self._raw: bytes | None = None
        self._active: RuleSet | None = None
        self._from_file: RuleSet | None = None
        self._write_lock: asyncio.Lock | None = None

    @classmethod
    def declare(cls, bus: Bus, file: Path) -> RouteRules:
        """Give ``bus`` route rules seeded from ``file``, the ``routes`` command and web view."""
        if bus in _declared:
            raise ValueError("route rules are declared twice for this bus")
        if CACHE_NAME in bus.caches:
            raise ValueError(f"a cache named {CACHE_NAME!r} would share the route rules' changelog")
        rules = _declared[bus] = cls(bus, file)
        bus.app.task(rules._load)
        for listener in bus.rule_set_listeners:  # the app adds the command and the view (application.py)
            listener(rules)
        return rules

    @staticmethod
    def of(bus: Bus) -> RouteRules | None:
        """The route rules declared for ``bus``, if any."""
        return _declared.get(bus)

    async def _load(self) -> None:
        """Worker task: create the changelog, then load and follow it until the worker stops."""
        await self.bus.changelog_topic(self.cache).maybe_declare()
        await CacheLoader(self.bus.app, [self.cache]).run()

    # --- reading (the busdriver, per record) ---------------------------------------------

    async def route(self, record: Mapping[str, Any]) -> tuple[Step, ...] | Envelope:
        """The route of ``record`` by the rules in use; waits only until the stored rules are loaded.

        A rule with ``deadline_s`` gives the envelope, stamped with that deadline.
        """
        if not self.cache.ready.is_set():
            await self.cache.ready.wait()
        active = self.active()
        rule = active.first_match(record)
        if rule is None:
            return active.default
        if rule.deadline_s is None:
            return rule.route
        return stamp(dict(record), rule.route, deadline_s=rule.deadline_s)

    def active(self) -> RuleSet:
        """The rule set in use, compiled again only when the stored one changed."""
        store = self.cache.store
        offset = -1 if store is None else store.offset
        if offset != self._offset or self._active is None:
            self._choose(None if store is None else store.get(KEY), offset)
        assert self._active is not None
        return self._active

    def file_rules(self) -> RuleSet:
        """The rules file, compiled once (against every stop the bus knows)."""
        if self._from_file is None:
            self._from_file = compile_rules(load_file(self.file), self.bus.known_stops)
        return self._from_file

    def _choose(self, raw: bytes | None, offset: int) -> None:
        self._offset = offset
        if raw is not None and raw == self._raw and self._active is not None:
            return
        if raw is None:
            self._active, self._raw, self.source, self.revision, self.refused = self.file_rules(), None, "file", 0, None
            log.info("route rules: none stored in the bus, using %s", self.file)
            return
        try:
            rules = compile_rules(_document(raw), self.bus.known_stops)
        except RuleError as exc:
            self._raw, self.refused = raw, str(exc)
            log.error("route rules: stored revision %d refused, the rules in use stay: %s", offset + 1, exc)
            if self._active is None:
                self._active, self.source, self.revision = self.file_rules(), "file", 0
            return
        self._active, self._raw, self.source, self.revision, self.refused = rules, raw, "bus", offset + 1, None
        log.info("route rules: revision %d in use (%d rules)", self.revision, len(rules.rules))

    def view(self) -> dict[str, Any]:
        """What the web view and ``routes list --json`` show: the rules in use and where they come from."""
        view: dict[str, Any] = {"ready": self.cache.ready.is_set(), "file": str(self.file)}
        try:
            rules = self.active()
        except RuleError as exc:
            return {**view, "error": str(exc)}
        view.update(source=self.source, revision=self.revision, **rules.document)
        if self.source == "bus":
            stored = _document(self._raw)
            view.update({k: stored[k] for k in ("updated_at", "updated_by") if k in stored})
        if self.refused:
            view["refused"] = self.refused
        return view

    # --- writing ---------------------------------------------------------------------------

    async def write(self, document: dict[str, Any] | None) -> int:
        """Store ``document`` (None: forget the stored rules); the changelog offset it went to."""
        app = self.bus.app
        await self.bus.changelog_topic(self.cache).maybe_declare()
        # Faust's @stampede decorator is untyped, so the method's own annotation is lost.
        producer: ProducerT = await app.maybe_start_producer()
        value = None if document is None else json.dumps(document, separators=(",", ":")).encode()
        metadata = await producer.send_and_wait(self.cache.changelog, KEY, value, 0, None, None)
        return metadata.offset

    def editor(self, by: str) -> RuleEditor:
        """An editor for the worker's web view: reads this worker's copy and waits until it holds each write."""
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        return RuleEditor(self, self._local_stored, by, lock=self._write_lock, applied=self._applied)

    async def _local_stored(self) -> tuple[bytes | None, int]:
        await asyncio.wait_for(self.cache.ready.wait(), APPLY_TIMEOUT)
        store = self.cache.store
        assert store is not None
        return store.get(KEY), store.offset

    async def _applied(self, offset: int) -> None:
        deadline = time.monotonic() + APPLY_TIMEOUT
        while self.cache.store is None or self.cache.store.offset < offset:
            if time.monotonic() > deadline:
                raise RuleError(f"this worker did not apply revision {offset + 1} within {APPLY_TIMEOUT:.0f} s")
            await asyncio.sleep(0.02)


def _document(raw: bytes | None) -> dict[str, Any]:
    try:
        document = json.loads(raw or b"")
    except ValueError as exc:
        raise RuleError(f"the stored rule set is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RuleError("the stored rule set is not a JSON object")
    return document


async def read_stored(settings: Settings, changelog: str) -> tuple[bytes | None, int]:
    """The stored rule set and its offset, read from the changelog (for commands, which hold no copy)."""
    consumer = changelog_consumer(settings)
    await consumer.start()
    try:
        if changelog not in await consumer.topics():
            return None, -1
        tp = TopicPartition(changelog, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, 0)
        value, offset = None, -1
        while True:
            records = (await consumer.getmany(tp, timeout_ms=300, max_records=1000)).get(tp, [])
            for record in records:
                if record.key == KEY:
                    value, offset = record.value, record.offset
            # The end offset alone is not trusted (see cache_loader): stop on an empty fetch past it.
            if not records and await consumer.position(tp) >= end:
                return value, offset
    finally:
        await consumer.stop()


class RuleEditor:
    """Every change to the stored rule set, for the CLI and the web view alike.

    Each change reads the stored rule set (or the file, when none is stored), applies the
    change, validates the whole result against the stops the bus knows, and writes it as
    the next revision; any error is a ``RuleError`` and nothing is written. Writers are
    last-writer-wins on the whole rule set: two changes at the same moment from two places
    may lose one (the web view serializes its own writes per worker).
    """

    def __init__(
        self,
        rules: RouteRules,
        read: Callable[[], Awaitable[tuple[bytes | None, int]]],
        by: str,
        *,
        lock: asyncio.Lock | None = None,
        applied: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.rules = rules
        self.read = read
        self.by = by
        self.lock = lock or asyncio.Lock()
        self.applied = applied

    async def current(self) -> tuple[dict[str, Any], str, int]:
        """The rule set as stored (or the file's), where it comes from, and its revision (0: the file)."""
        raw, offset = await self.read()
        if raw is None:
            return normalize(load_file(self.rules.file)), "file", 0
        stored = _document(raw)
        meta = {key: stored[key] for key in META_KEYS if key in stored}
        return {**normalize(stored), **meta}, "bus", offset + 1

    async def load(self, document: Any) -> int:
        """Replace the whole rule set."""
        async with self.lock:
            return await self._save(document)

    async def put(self, rule: Any, *, create: bool | None = None, **where: Any) -> int:
        """Add a rule, or replace the rule of its name (``create`` and where it goes: see ``put_rule``)."""
        async with self.lock:
            canonical = normalize_rule(rule, self.rules.bus.known_stops)
            document, *_ = await self.current()
            return await self._save(put_rule(document, canonical, create=create, **where))

    async def remove(self, name: str) -> int:
        """Remove the rule ``name``."""
        async with self.lock:
            document, *_ = await self.current()
            return await self._save(remove_rule(document, name))

    async def set_default(self, route: Any) -> int:
        """Replace the default route."""
        async with self.lock:
            document, *_ = await self.current()
            return await self._save(set_default(document, route))

    async def reset(self) -> int:
        """Forget the stored rule set: every worker goes back to the rules file."""
        async with self.lock:
            offset = await self.rules.write(None)
            if self.applied is not None:
                await self.applied(offset)
            return 0

    async def _save(self, document: Any) -> int:
        canonical = compile_rules(document, self.rules.bus.known_stops).document
        canonical.update(updated_at=round(time.time(), 3), updated_by=self.by)
        offset = await self.rules.write(canonical)
        if self.applied is not None:
            await self.applied(offset)
        return offset + 1
