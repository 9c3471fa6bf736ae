"""What each stop of this worker has done with its messages, counted in memory."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bus import Outcome


@dataclass
class StopStats:
    """Counters of one stop; ``forwarded`` counts by the stop sent to."""

    received: int = 0
    delivered: int = 0
    forwarded: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "received": self.received,
            "forwarded": sum(self.forwarded.values()),
            "forwarded_to": dict(self.forwarded),
            "delivered": self.delivered,
            "dropped": sum(self.dropped.values()),
            "dropped_by_reason": dict(self.dropped),
            "dead_lettered": sum(self.dead_lettered.values()),
            "dead_lettered_by_error": dict(self.dead_lettered),
        }


class BusStats:
    """Counters of every stop that ran in this worker."""

    def __init__(self) -> None:
        self.stops: dict[str, StopStats] = {}

    def __getitem__(self, stop: str) -> StopStats:
        try:
            return self.stops[stop]
        except KeyError:
            stats = self.stops[stop] = StopStats()
            return stats

    def record(self, outcome: Outcome) -> None:
        """Count one message's outcome (the bus calls this for every message)."""
        stats = self[outcome.stop]
        stats.received += 1
        if outcome.fate == "forwarded":
            stats.forwarded[outcome.detail] += 1
        elif outcome.fate == "delivered":
            stats.delivered += 1
        elif outcome.fate == "dropped":
            stats.dropped[outcome.detail] += 1
        else:
            stats.dead_lettered[outcome.detail] += 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view of every stop."""
        return {name: stats.as_dict() for name, stats in sorted(self.stops.items())}
