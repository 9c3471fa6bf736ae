"""What a stop did with one message: forwarded, delivered, dropped or dead-lettered, and the fates of recovery.

Recovery (``core/recovery.py``): ``retrying`` (a failed attempt that will be tried again, in
place or after a delay topic; not an end), ``compensating`` (failed for good at this stop;
the stops done are being undone; not an end), and the ends ``compensated`` (undone, then
dead-lettered), ``compensation_failed`` and ``expired`` (past its deadline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metrobus_app.wire.envelope import Envelope

FORWARDED, DELIVERED, DROPPED, DEAD_LETTERED = "forwarded", "delivered", "dropped", "dead_lettered"
RETRYING, COMPENSATING = "retrying", "compensating"
COMPENSATED, COMPENSATION_FAILED, EXPIRED = "compensated", "compensation_failed", "expired"
#: Fates that end a message's journey (each ended one is counted once by ``reconcile``).
TERMINAL = (DELIVERED, DROPPED, DEAD_LETTERED, COMPENSATED, COMPENSATION_FAILED, EXPIRED)


@dataclass(slots=True)
class Outcome:
    """What a stop did with one message; a stop's agent hands one per message to its sinks.

    ``detail`` is the next stop, the drop reason or the error type (``message`` then says
    what went wrong). Observers (stats, the record of fates) also get the envelope, when the
    value was one, and the time it took. A fan-out is forwarded with ``detail`` naming every
    stop a copy went to (``"Log+Archive"``) and ``copies`` saying how many copies were sent.
    """

    stop: str
    fate: str
    detail: str = ""
    envelope: Envelope | None = field(default=None, compare=False, repr=False)
    received_at: float = field(default=0.0, compare=False, repr=False)
    elapsed: float = field(default=0.0, compare=False, repr=False)
    message: str = field(default="", compare=False, repr=False)
    copies: int = field(default=1, compare=False, repr=False)
