"""The transaction gate (``runtime/transactions.py``): commits only between records, stale sends dropped, taint."""

import asyncio

from metrobus_app.runtime.transactions import TransactionGate, current_unit


async def test_a_commit_waits_for_a_unit_that_sent_and_a_new_sender_waits_for_the_commit():
    gate = TransactionGate()
    dirty = gate.start("AddEmail", 0)
    assert current_unit() is dirty
    assert await gate.admit(dirty)
    draining = asyncio.ensure_future(gate.close_and_drain())
    await asyncio.sleep(0.01)
    assert not draining.done()  # the unit that sent is not acked yet

    async def clean_sender() -> bool:
        unit = gate.start("AddEmail", 1)
        return await gate.admit(unit)

    waiting = asyncio.ensure_future(clean_sender())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # a first send waits while a commit runs
    gate.end(dirty, acked=True)
    assert await draining is True
    assert not waiting.done()
    gate.reopen()
    assert await waiting is True


async def test_a_unit_cut_after_it_sent_taints_the_gate_until_a_rebalance():
    gate = TransactionGate()
    unit = gate.start("AddEmail", 0)
    await gate.admit(unit)
    gate.end(unit, acked=False)
    assert gate.tainted == "AddEmail-0"
    assert await gate.close_and_drain() is False  # nothing may be committed
    gate.new_epoch()
    assert gate.tainted is None and await gate.close_and_drain() is True


async def test_a_unit_that_began_before_a_rebalance_has_its_sends_dropped():
    gate = TransactionGate()
    unit = gate.start("AddEmail", 0)
    assert await gate.admit(unit)
    gate.new_epoch()
    assert await gate.admit(unit) is False
    fresh = gate.start("AddEmail", 0)
    gate.new_epoch()
    assert await gate.admit(fresh) is False
    gate.end(fresh, acked=False)
    assert gate.tainted is None  # its transactions are gone with the rebalance


async def test_a_unit_that_never_sent_does_not_hold_a_commit():
    gate = TransactionGate(drain_timeout_s=0.05)
    gate.start("metrobus-retry-2s", 0)  # e.g. a delay agent waiting until a message is due
    assert await gate.close_and_drain() is True
    gate.reopen()
    stuck = gate.start("AddEmail", 0)
    await gate.admit(stuck)
    assert await gate.close_and_drain() is False  # a record that never finishes: no commit, gate reopened
    assert await gate.admit(gate.start("AddEmail", 1)) is True


async def test_after_a_stops_last_commit_nothing_more_is_sent():
    gate = TransactionGate()
    gate.ended = True
    assert await gate.admit(gate.start("metrobus-retry-2s", 0)) is False
