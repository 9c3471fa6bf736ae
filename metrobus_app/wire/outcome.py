"""What a stop did with one message: forwarded, delivered, dropped or dead-lettered."""

from __future__ import annotations

from dataclasses import dataclass, field

from metrobus_app.wire.envelope import Envelope

FORWARDED, DELIVERED, DROPPED, DEAD_LETTERED = "forwarded", "delivered", "dropped", "dead_lettered"


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
