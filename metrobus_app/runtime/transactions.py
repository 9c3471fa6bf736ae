"""Exactly-once as the bus keeps it: what a record causes is committed with that record's offset, or not at all.

Faust's transactional mode keeps one transactional producer per source partition (its id
``<app id>-<partition group>-<partition>``) and commits each partition's offsets through its
own producer, as KIP-98 has it. But Faust puts a *send* in the transaction of the partition the
record goes *to*: a record read from ``AddEmail``-0 and forwarded with a key that hashes to
``WhiteList``-3 is committed in transaction 3, its offset in transaction 0. A worker killed
between the two commits, or a rebalance that fences one of them, leaves the forward committed
and the offset not (a duplicate for ``read_committed`` readers) or the reverse (a loss). A send
back from a delay topic does the same. And a commit can land while a stop is half way through a
record: its forward is in the transaction, its offset is not (another duplicate).

Here a record's sends go to the transaction of the partition it was *read from*, and a commit
happens only *between* records:

- ``serve`` (``runtime/intake.py``) opens a ``Unit`` for each record (a batch's, or a Faust event)
  it hands to a stop, and ends it once the record is acked; ``TransactionManager.send`` (``runtime/delivery.py``)
  puts the unit's sends in the transaction of its source partition;
- a unit that has sent is *dirty* until it ends; ``Consumer.force_commit`` (``runtime/transport.py``)
  closes the ``TransactionGate`` (a clean unit's first send waits), waits until no unit is dirty,
  then computes the offsets and commits: so every send in a committed transaction belongs to a
  record whose offset is in it;
- a rebalance aborts every open transaction, the kept partitions' too (``TransactionManager.on_rebalance``):
  the records it cut are read again from the committed offsets, so what they sent must go;
- a unit that ends without its records acked after it sent (cancelled by a stop, cut by a
  rebalance) *taints* the gate: this worker commits nothing until the next rebalance, and at its
  stop aborts its open transactions, so its records are read again by the next owner, once;
- a stop's last commit (Faust's, before the agents stop) *ends* the gate: a stop still running
  sends nothing more (its record is not committed, so it is read again) and nothing more is
  committed.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from typing import Any

log = logging.getLogger("metrobus.transactions")

# How long a commit waits for the stops to finish the records they sent for.
DRAIN_TIMEOUT_S = 10.0


class Unit:
    """One record of a source partition being handled (of a batch, or a Faust event)."""

    __slots__ = ("epoch", "partition", "sent", "tid", "topic")

    def __init__(self, topic: str, partition: int, epoch: int) -> None:
        self.topic = topic
        self.partition = partition
        self.epoch = epoch
        self.sent = False
        self.tid: str | None = None


CURRENT: ContextVar[Unit | None] = ContextVar("metrobus_unit", default=None)


class TransactionGate:
    """Lets a commit in only between records: see the module docstring."""

    def __init__(self, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        self.drain_timeout_s = drain_timeout_s
        self.epoch = 0
        self.dirty = 0
        self.tainted: str | None = None
        self.ended = False  # the last commit of a stop is done: nothing more is sent or committed
        self._open = asyncio.Event()
        self._open.set()
        self._drained = asyncio.Event()
        self._drained.set()

    def start(self, topic: str, partition: int) -> Unit:
        """A unit for records of ``topic``-``partition``, current in this task until ``end``."""
        unit = Unit(topic, partition, self.epoch)
        CURRENT.set(unit)
        return unit

    async def admit(self, unit: Unit) -> bool:
        """Before each send of a unit: False when a rebalance came since it began (drop the send).

        A stale unit's record is not acked (its generation is gone) and is read again, so what it
        sends now would be sent twice. Before a unit's first send, wait while a commit runs, then
        count the unit dirty.
        """
        if not unit.sent:
            while not self._open.is_set():
                await self._open.wait()
            if unit.epoch != self.epoch or self.ended:
                return False
            unit.sent = True
            self.dirty += 1
            self._drained.clear()
        return unit.epoch == self.epoch and not self.ended

    def end(self, unit: Unit, *, acked: bool) -> None:
        """The unit is done: ``acked`` when every record it handled was acked (its sends may be committed)."""
        CURRENT.set(None)
        if not unit.sent or unit.epoch != self.epoch:
            return
        if not acked:
            self.taint(f"{unit.topic}-{unit.partition}", "a record sent messages but was not acked (cut by a stop)")
        self.dirty -= 1
        if self.dirty <= 0:
            self.dirty = 0
            self._drained.set()

    def taint(self, what: str, why: str) -> None:
        """Commit nothing more until the next rebalance (the first ``what`` is kept, ``why`` logged with it)."""
        if self.tainted is None:
            self.tainted = what
            log.warning("%s: %s; this worker commits no more transactions until its next rebalance", what, why)

    def new_epoch(self) -> None:
        """A rebalance dropped every transaction: what was dirty or tainted belongs to the old ones."""
        self.epoch += 1
        self.dirty = 0
        self.tainted = None
        self._drained.set()

    async def close_and_drain(self) -> bool:
        """Hold new senders back and wait until no unit is dirty; False (gate reopened) when it may not commit.

        It may not when a unit never finished, when the gate is tainted, or when a rebalance came
        meanwhile (its transactions are being replaced; their records are read again).
        """
        epoch = self.epoch
        self._open.clear()
        try:
            async with asyncio.timeout(self.drain_timeout_s):
                await self._drained.wait()
        except asyncio.CancelledError:
            self.reopen()  # else every sender would wait for good
            raise
        except TimeoutError:
            log.warning(
                "a commit waited %g s for stops to finish records they sent for; not committing now",
                self.drain_timeout_s,
            )
            self.reopen()
            return False
        if self.tainted is not None or self.epoch != epoch:
            self.reopen()
            return False
        return True

    def reopen(self) -> None:
        self._open.set()


def current_unit() -> Unit | None:
    """The unit the running task handles, if any."""
    return CURRENT.get()


def gate_of(app: Any) -> TransactionGate | None:
    """The app's gate in exactly-once mode (made on first use), else None."""
    if not getattr(app, "in_transaction", False):
        return None
    gate = getattr(app, "metrobus_transaction_gate", None)
    if gate is None:
        gate = app.metrobus_transaction_gate = TransactionGate()
    return gate
