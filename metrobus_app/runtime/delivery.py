"""What metrobus promises about delivery, and the few pieces that keep the promise.

**At least once (the default).** A stop's agent acks an event once it handled it
(``intake.serve``), that is after ``Bus.handle`` returned: by then the forward (or the dead
letter) is in a batch of the bus (``runtime/producing.py``) or with the producer. Offsets are committed by
``Consumer._commit_offsets``, which first flushes the producer (it waits for every pending
batch) and then commits. So an offset is committed only after everything sent before it has
been answered by the broker, and two things remain to be made sure here:

- *a send that failed*: the flush also ends when a batch failed (after the producer's own
  retries, ``producer_request_timeout``), and Faust only logs that. ``DeliveryGuard`` watches
  every batch's (and send's) future; after a failure the worker commits nothing more and
  stops, so a restart takes the messages again from the last good commit;
- *what is queued in memory*: hooks run before every commit (``DeliveryGuard.before_commit``),
  so for instance the fates recorded so far are sent first; the flush hands the bus's open
  batches to the producer (``transport.Producer``) and waits for them too.

**Exactly once (``METROBUS_PROCESSING_GUARANTEE=exactly_once``)** is Faust's transactional
mode, with the part the guarantee rests on kept by the bus (``runtime/transactions.py``): a
transactional producer per source partition; what a record causes and its offset are committed
in one transaction, the one of the partition it was read from, and commits come between records.
Sends to topics the app does not consume (the dead-letter topic, the fates and stats topics,
external stops) go through the plain producer, at least once (``TransactionManager`` below).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from aiokafka.errors import ProducerFenced
from faust.transport.consumer import TransactionManager as FaustTransactionManager

from metrobus_app.config.checks import EXACTLY_ONCE
from metrobus_app.errors import MetrobusError
from metrobus_app.runtime.producing import crc32_partition, send_for, too_large
from metrobus_app.runtime.transactions import current_unit, gate_of
from metrobus_app.wire.topics import fates_topic

log = logging.getLogger("metrobus.delivery")


CommitHook = Callable[[], Awaitable[Any]]
COMMIT_WAIT_S = 5.0  # how long a rebalance waits for a commit under way (exactly once)


class DeliveryFailed(MetrobusError):
    """The broker did not take a message this worker sent; nothing after it may be committed."""


class DeliveryGuard:
    """Knows whether every send of this worker was taken by the broker, and gates commits on it."""

    def __init__(self) -> None:
        self.failure: BaseException | None = None
        self.hooks: list[CommitHook] = []
        self.on_failure: Callable[[BaseException], Any] | None = None

    def watch(self, future: Any) -> None:
        """Note the outcome of one send (a future of the producer); O(1), no await."""
        add = getattr(future, "add_done_callback", None)
        if add is not None:
            add(self._done)

    def _done(self, future: asyncio.Future) -> None:
        if future.cancelled():
            self.fail(DeliveryFailed("a send was cancelled before the broker took it"))
            return
        exc = future.exception()
        if exc is not None:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """Record that a send failed: from now on this worker commits nothing."""
        if self.failure is not None:
            return
        self.failure = exc
        log.critical(
            "the broker did not take a message (%s: %s): this worker commits no more offsets and stops; "
            "a restart takes every message since the last commit again (at least once)",
            type(exc).__name__,
            exc,
        )
        if self.on_failure is not None:
            self.on_failure(exc)

    def before_commit(self, hook: CommitHook) -> CommitHook:
        """Run ``hook`` before every offset commit (e.g. hand queued records to the producer)."""
        self.hooks.append(hook)
        return hook

    async def run_hooks(self) -> None:
        for hook in self.hooks:
            try:
                await hook()
            except Exception as exc:
                # A hook that cannot hand its records over must not let the commit go on.
                self.fail(exc)

    def may_commit(self) -> bool:
        """True unless a send failed; called after the producer's flush, right before a commit."""
        if self.failure is None:
            return True
        log.error("not committing offsets: a send failed earlier (%s)", type(self.failure).__name__)
        return False


def guard_of(app: Any) -> DeliveryGuard | None:
    """The guard of a metrobus app (None for other apps)."""
    bus = getattr(app, "bus", None)
    return getattr(bus, "delivery", None)


def install(app: Any) -> DeliveryGuard:
    """Give ``app.bus`` a guard: its sends are watched, and a failed one stops the worker."""
    guard = DeliveryGuard()
    bus = app.bus
    bus.delivery = guard

    crashing: list[asyncio.Future] = []

    def crash(exc: BaseException) -> None:
        crashing.append(asyncio.ensure_future(app.crash(DeliveryFailed(f"{type(exc).__name__}: {exc}"))))

    guard.on_failure = crash

    producer_send: Any = None

    async def send(topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        # Straight to the producer, as ``Topic.send`` would, minus its per-message future
        # wrapper and send sensors: at least once in batches of our own (``runtime/producing.py``,
        # handed over whenever Faust flushes the producer, ``transport.Producer``), in
        # exactly-once mode to Faust's transaction manager. Looked up (and started) once.
        nonlocal producer_send
        if producer_send is None:
            producer = await app.maybe_start_producer()
            producer_send, batching = send_for(app, producer, guard.watch)
            if batching is not None:
                # A fates record's key is used once: crc32 in C, not murmur2 in Python kept for reuse.
                batching.partition_by[fates_topic(app.settings.app_id)] = crc32_partition
            if hasattr(producer, "batching"):
                producer.batching = batching
            if batching is not None and bus.sender is send:
                bus.offer = batching.offer  # its failures come back through this send, which the guard watches
                bus.idleness.when_all_wait = batching.ship_soon
        try:
            future = await (producer_send(topic, key, value, headers) if headers else producer_send(topic, key, value))
        except Exception as exc:
            if not too_large(exc):  # the bus dead-letters a message too large to send; nothing else
                guard.fail(exc)
            raise
        if future is not None:
            guard.watch(future)

    bus.sender = send
    guard.before_commit(lambda: publish_fates_before_commit(app))
    return guard


def _in_a_partition_group(app: Any, topic: str) -> bool:
    try:
        app.assignor.group_for_topic(topic)
    except KeyError:
        return False
    return True


class TransactionManager(FaustTransactionManager):
    """Faust's transaction manager, with a record's sends in the transaction of the partition it was read from.

    See ``runtime/transactions.py`` for why. A send made outside a stop's record (no unit) keeps
    Faust's choice, the destination's transaction. A topic this app does not consume has no
    partition group, so no transaction (Faust raises ``KeyError``): the dead-letter topic and the
    watch's topics are sent to outside transactions, at least once.
    """

    async def send(self, topic: str, key: bytes | None, value: bytes | None, *args: Any, **kwargs: Any) -> Any:
        app = self.app
        if not _in_a_partition_group(app, topic):
            return await self.producer.send(topic, key, value, *args, **kwargs)
        unit, gate = current_unit(), gate_of(app)
        if unit is None or gate is None:
            return await super().send(topic, key, value, *args, **kwargs)
        if not await gate.admit(unit):
            log.debug("dropped a send of a record of %s-%d cut by a rebalance", unit.topic, unit.partition)
            return _dropped()
        if unit.tid is None:
            unit.tid = _transactional_id(app, unit.topic, unit.partition)
        partition, timestamp, headers = [*args, None, None, None][:3]
        partition = self.consumer.key_partition(topic, key, partition)
        return await self.producer.send(topic, key, value, partition, timestamp, headers, transactional_id=unit.tid)

    async def commit(self, offsets: Mapping[Any, int], start_new_transaction: bool = True) -> bool:
        """Faust's commit, except that a fenced producer does not crash the worker.

        Fenced means another worker owns the partition now (this one missed a rebalance, e.g.
        while a broker was away): what this one left open is aborted by the new owner. Faust
        crashed the worker; here it commits nothing more until its own rebalance comes.
        """
        gate = gate_of(self.app)
        by_transactional_id: dict[str, dict[Any, int]] = {}
        for tp, offset in offsets.items():
            by_transactional_id.setdefault(_transactional_id(self.app, tp.topic, tp.partition), {})[tp] = offset
        if not by_transactional_id:
            return True
        try:
            await self.producer.commit_transactions(
                by_transactional_id, self.app.conf.id, start_new_transaction=start_new_transaction
            )
        except ProducerFenced as exc:
            log.warning("fenced (%s): another worker owns those partitions now; waiting for the rebalance", exc)
            if gate is not None:
                gate.taint("fenced", "a transactional producer was fenced")
            return False
        return True

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any) -> None:
        """Every open transaction aborted, the assigned partitions' begun anew, in a new epoch of the gate.

        Faust stops only the revoked partitions' producers. But a rebalance also cuts the records
        of the partitions a worker keeps, which it then reads again from their committed offsets:
        their transactions hold sends of those records (a duplicate once committed, faust-streaming
        #502). A producer started again with the same transactional id makes the broker abort what
        the old one left open.
        """
        app, gate = self.app, gate_of(self.app)
        if gate is None:
            return await super().on_rebalance(assigned, revoked, newly_assigned)
        gate.new_epoch()
        # A commit under way finishes before its producers are replaced (it would wait on a stopped one).
        under_way = cast(Any, self.consumer).maybe_wait_for_commit_to_finish()
        try:
            await asyncio.wait_for(asyncio.shield(under_way), COMMIT_WAIT_S)
        except TimeoutError:
            log.warning("a commit still runs %g s into a rebalance; replacing its producers anyway", COMMIT_WAIT_S)
        for tid in sorted(_transactional_ids(app, set(assigned) | set(revoked))):
            await self.producer.stop_transaction(tid)
        for tid in sorted(_transactional_ids(app, assigned)):
            await self.producer.maybe_begin_transaction(tid)
        return None


def _transactional_id(app: Any, topic: str, partition: int) -> str:
    """Faust's transactional id of a source partition: ``<app id>-<partition group>-<partition>``."""
    return f"{app.conf.id}-{app.assignor.group_for_topic(topic)}-{partition}"


def _transactional_ids(app: Any, tps: Any) -> set[str]:
    assignor = app.assignor
    return {_transactional_id(app, tp.topic, tp.partition) for tp in tps if not assignor.is_standby(tp)}


def _dropped() -> asyncio.Future:
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


async def publish_fates_before_commit(app: Any) -> None:
    """Hand the fates recorded so far (``observe/cluster_view.py``) to the producer, so a commit never outruns them."""
    watch = getattr(app, "watch", None)
    if watch is not None:
        await watch.publish_fates()
        if app.settings.processing_guarantee == EXACTLY_ONCE:
            # A transactional commit flushes only the transactions; the fates go outside them.
            await app.producer.flush()
