"""Names of the bus's own topics beside the stop topics."""

from __future__ import annotations


def fates_topic(app_id: str) -> str:
    """The compacted topic every worker publishes terminal fates to and reads them from."""
    return f"{app_id}-fates"


def stats_topic(app_id: str) -> str:
    """The compacted topic every worker publishes its stats to, keyed by its worker id."""
    return f"{app_id}-stats"


def replayed_topic(app_id: str) -> str:
    """Which dead letters ``deadletters replay`` sent back, so none is sent twice."""
    return f"{app_id}-replayed"


def delay_topic(app_id: str, tier_s: int) -> str:
    """The delay topic of one tier: a message waits there until its retry is due."""
    return f"{app_id}-retry-{tier_s}s"
