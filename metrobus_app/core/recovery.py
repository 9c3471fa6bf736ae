"""When a stop fails: retries (in place or through a delay topic), compensation of the stops done, deadlines.

- A failed attempt that its stop's ``Retry`` calls passing is tried again at the same stop:
  after a short wait in place (the partition waits: order per key kept), or, when the wait
  is longer than ``METROBUS_RETRY_IN_PLACE_MAX_MS``, after a stay in a delay topic
  (``<app id>-retry-<s>s``), whose agent sends it back to the stop when due while the stop
  goes on with the next messages (order per key not kept). ``header.attempts`` counts the
  failed tries at the current stop; it starts again at the next stop.
- A message that fails for good (a non-passing error, no attempts left, ``Fault``, its
  deadline passed) goes back through the compensations of the stops done, newest first,
  each on its own stop's topic (``wire/compensation.py``), then to the dead-letter topic
  with the story. Without stops to undo it is dead-lettered at once, as before.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from metrobus_app.core.retry import Retry
from metrobus_app.errors import CompensationFailed, DeadlinePassed, InvalidEnvelope
from metrobus_app.observe.tracing import kafka_headers
from metrobus_app.wire import compensation
from metrobus_app.wire.envelope import ATTEMPTS, COMPENSATING, DEADLINE, HOPS, RETRY, TRACE, Envelope
from metrobus_app.wire.outcome import (
    COMPENSATED,
    COMPENSATION_FAILED,
    DEAD_LETTERED,
    EXPIRED,
    FORWARDED,
    RETRYING,
    Outcome,
)
from metrobus_app.wire.outcome import (
    COMPENSATING as COMPENSATING_FATE,
)
from metrobus_app.wire.topics import delay_topic

if TYPE_CHECKING:
    from metrobus_app.config.settings import Settings
    from metrobus_app.observe.tracing import Tracing

Undo = Callable[[Any, Any], Any]  # undo(payload, log); may be async
StopFunction = Callable[[Any], Any]


class BusPort(Protocol):
    """What recovery needs of the bus (``core/bus.py``)."""

    settings: Settings
    worker_id: str
    tracing: Tracing | None
    stops: dict[str, Callable[..., Any]]

    @property
    def sender(self) -> Callable[..., Awaitable[None]]: ...

    async def run_stop(
        self, stop: str, fn: StopFunction, key: bytes | None, raw: bytes | None, received_at: float
    ) -> Outcome: ...

    async def forward(
        self, envelope: Envelope, key: bytes | None, *, stop: str, received_at: float | None = None
    ) -> Outcome: ...

    async def dead_letter(
        self,
        stop: str,
        key: bytes | None,
        raw: bytes | None,
        error: BaseException,
        envelope: Envelope | None = None,
        *,
        topic: str | None = None,
        fate: str = DEAD_LETTERED,
        story: dict[str, Any] | None = None,
        outcome_stop: str | None = None,
    ) -> Outcome: ...

    def observe(self, outcome: Outcome, received_at: float, started: float) -> Outcome: ...


class Story(Exception):
    """The failure a compensated message is dead-lettered for, as it was first told."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Recovery:
    """The retry policies and compensations of one bus's stops, and what the bus does with a failure."""

    def __init__(self, bus: BusPort) -> None:
        self.bus = bus
        self.policies: dict[str, Retry] = {}
        self.undos: dict[str, Undo] = {}
        self.tiers = tuple(sorted(int(tier) for tier in bus.settings.retry_delay_tiers))

    def compensation(self, stop: str) -> Callable[[Undo], Undo]:
        """Declare how ``stop`` is undone: ``undo(payload, log)``, ``log`` being what the stop remembered."""

        def register(undo: Undo) -> Undo:
            if stop in self.undos:
                raise ValueError(f"stop {stop!r} has a compensation already")
            self.undos[stop] = undo
            return undo

        return register

    def delay_topics(self) -> list[str]:
        """The delay topics of the bus (one per tier)."""
        return [delay_topic(self.bus.settings.app_id, tier) for tier in self.tiers]

    # --- on arrival -----------------------------------------------------------------------

    async def on_arrival(
        self, stop: str, fn: StopFunction, key: bytes | None, raw: bytes | None, envelope: Envelope, received_at: float
    ) -> Outcome | None:
        """Before the stop runs: a compensation to run, or a deadline passed; None to run the stop."""
        header = envelope.header
        header.pop(RETRY, None)  # back from a delay topic
        if COMPENSATING in header:
            return await self._undo(stop, fn, key, raw, envelope, received_at)
        deadline = header.get(DEADLINE)
        if isinstance(deadline, int | float) and time.time() > deadline:
            late = time.time() - deadline
            error = DeadlinePassed(f"the message reached {stop} {late:.3f} s after its deadline")
            return await self.give_up(stop, key, raw, envelope, error, expired=True)
        return None

    # --- a failed attempt -----------------------------------------------------------------

    async def failed(
        self,
        stop: str,
        fn: StopFunction,
        key: bytes | None,
        raw: bytes | None,
        envelope: Envelope,
        error: Exception,
        received_at: float,
        started: float,
    ) -> Outcome:
        """The stop raised ``error``: try again (in place or later) when its policy says so, else give up."""
        compensation.take_log()
        attempt = _attempts(envelope) + 1
        policy = self.policies.get(stop)
        if policy is None or not policy.retries(error, attempt):
            return await self.give_up(stop, key, raw, envelope, error)
        return await self._again(stop, fn, key, raw, error, attempt, policy, received_at, started)

    async def _again(
        self,
        stop: str,
        fn: StopFunction,
        key: bytes | None,
        raw: bytes | None,
        error: Exception,
        attempt: int,
        policy: Retry,
        received_at: float,
        started: float,
    ) -> Outcome:
        wait = policy.wait_s(attempt)
        again = _as_arrived(raw, stop, attempt, error, received_at, self.bus.worker_id)
        failure = f"attempt {attempt} of {policy.attempts} failed: {type(error).__name__}: {error}"
        if wait * 1000 <= self.bus.settings.retry_in_place_max_ms:
            self.bus.observe(Outcome(stop, RETRYING, "in place", again, message=f"{failure}; next in place"),
                             received_at, started)  # fmt: skip
            await asyncio.sleep(wait)
            return await self.bus.run_stop(stop, fn, key, again.to_bytes(), time.time())
        tier = compensation.tier_for(wait, self.tiers)
        due = time.time() + wait
        again.header[RETRY] = {"stop": stop, "attempt": attempt + 1, "of": policy.attempts, "due": round(due, 6)}
        topic = delay_topic(self.bus.settings.app_id, tier)
        tracing = self.bus.tracing
        if tracing is None:
            await self.bus.sender(topic, key, again.to_bytes())
        else:  # the wait in the delay topic is a child of this failed attempt
            carrier = again.header[TRACE] = tracing.carrier()
            await self.bus.sender(topic, key, again.to_bytes(), headers=kafka_headers(carrier))
        when = datetime.fromtimestamp(due, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return Outcome(stop, RETRYING, topic, again, message=f"{failure}; next due at {when}")

    async def give_up(
        self,
        stop: str,
        key: bytes | None,
        raw: bytes | None,
        envelope: Envelope,
        error: BaseException,
        *,
        expired: bool = False,
    ) -> Outcome:
        """The message failed for good at ``stop``: undo the stops done, else dead-letter it now."""
        clean = _clean(raw, envelope)
        end = EXPIRED if expired else COMPENSATED
        if not compensation.begin(clean, stop, error, fate=end):
            fate = EXPIRED if expired else DEAD_LETTERED
            return await self.bus.dead_letter(stop, key, raw, error, clean, fate=fate)
        outcome = await self.bus.forward(clean, key, stop=stop)
        if outcome.fate != FORWARDED:
            return outcome
        return Outcome(stop, COMPENSATING_FATE, type(error).__name__, clean, message=str(error))

    # --- compensation ---------------------------------------------------------------------

    async def _undo(
        self, stop: str, fn: StopFunction, key: bytes | None, raw: bytes | None, envelope: Envelope, received_at: float
    ) -> Outcome:
        started = time.perf_counter()
        entry = compensation.entry_of(envelope, stop)
        undo = self.undos.get(stop)
        if entry is None or undo is None:
            why = "its compensation is not declared here" if entry is not None else "it is not the next to undo"
            return await self._failed_undo(stop, key, envelope, f"{stop} cannot undo its part: {why}")
        try:
            result = undo(envelope.payload, entry.get("log"))
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            attempt = _attempts(envelope) + 1
            policy = self.policies.get(stop)
            if policy is not None and policy.retries(exc, attempt):
                return await self._again(stop, fn, key, raw, exc, attempt, policy, received_at, started)
            return await self._failed_undo(
                stop, key, envelope, f"{stop}'s compensation failed: {type(exc).__name__}: {exc}"
            )
        compensation.undone(envelope, stop)
        told = envelope.header[COMPENSATING]
        if envelope.route:  # on to the next stop to undo: still compensating, not a forward along the route
            outcome = await self.bus.forward(envelope, key, stop=stop, received_at=received_at)
            if outcome.fate != FORWARDED:
                return outcome
            return Outcome(stop, COMPENSATING_FATE, told["error"], envelope, message=told["message"])
        failed_at, told, original = compensation.story(envelope)
        error = Story(told["error"], told["message"])
        story = {"failed_at": failed_at, "compensated": told["undone"], "failed_at_time": told["at"]}
        ended = await self.bus.dead_letter(
            failed_at, key, original.to_bytes(), error, original, fate=told["fate"], story=story, outcome_stop=stop
        )
        ended.envelope = envelope  # the observers see the story (header.compensating) with the end
        return ended

    async def _failed_undo(self, stop: str, key: bytes | None, envelope: Envelope, why: str) -> Outcome:
        failed_at, told, original = compensation.story(envelope)
        not_undone = compensation.undo_stops(envelope)
        error = CompensationFailed(f"{why}; not undone: {', '.join(not_undone) or 'none'}")
        story = {
            "failed_at": failed_at,
            "first_error": told["error"],
            "first_message": told["message"],
            "compensated": told["undone"],
            "not_undone": not_undone,
        }
        ended = await self.bus.dead_letter(
            failed_at,
            key,
            original.to_bytes(),
            error,
            original,
            fate=COMPENSATION_FAILED,
            story=story,
            outcome_stop=stop,
        )
        ended.envelope = envelope
        return ended

    # --- the delay topics' agents ---------------------------------------------------------

    async def send_back(self, tier: str, key: bytes | None, raw: bytes | None, message: Any = None) -> Outcome:
        """A delay topic's agent: wait until the message's retry is due, then send it back to its stop."""
        try:
            envelope = Envelope.from_bytes(raw)
            retry = envelope.header[RETRY]
            stop, due = retry["stop"], float(retry["due"])
        except (InvalidEnvelope, KeyError, TypeError, ValueError) as exc:
            error = InvalidEnvelope(f"not a message waiting to retry: {type(exc).__name__}: {exc}")
            return await self.bus.dead_letter(tier, key, raw, error)
        wait = due - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        await self.bus.sender(stop, key, raw or b"")
        return Outcome(tier, FORWARDED, stop, envelope)


def _attempts(envelope: Envelope) -> int:
    value = envelope.header.get(ATTEMPTS)
    return value if type(value) is int and value > 0 else 0


def _as_arrived(
    raw: bytes | None, stop: str, attempt: int, error: BaseException, received_at: float, worker: str
) -> Envelope:
    """The message as it came to ``stop`` (the stop may have changed its payload), this failed attempt noted."""
    again = Envelope.from_bytes(raw)
    again.header[ATTEMPTS] = attempt
    hop = {
        "stop": stop,
        "received": round(received_at, 6),
        "failed": round(time.time(), 6),
        "attempt": attempt,
        "error": type(error).__name__,
        "worker": worker,
    }
    hops = again.header.get(HOPS)
    again.header[HOPS] = [*hops, hop] if isinstance(hops, list) else [hop]
    return again


def _clean(raw: bytes | None, envelope: Envelope) -> Envelope:
    """The envelope as it arrived (the stop may have changed its payload), with the hops recorded since."""
    try:
        clean = Envelope.from_bytes(raw)
    except InvalidEnvelope:
        return envelope
    if HOPS in envelope.header:
        clean.header[HOPS] = envelope.header[HOPS]
    clean.header.pop(RETRY, None)
    return clean
