"""What each stop of this worker has done with its messages, counted in memory."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view of every stop."""
        return {name: stats.as_dict() for name, stats in sorted(self.stops.items())}
