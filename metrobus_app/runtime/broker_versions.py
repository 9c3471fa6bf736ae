"""Whether this aiokafka can talk to the broker: every API the bus uses, in a version both know.

aiokafka negotiates a version per request from the broker's ApiVersions answer. A broker that
dropped every version aiokafka knows of one API (Kafka 4.0 removed old ones, KIP-896; a later
release may remove more), or an old one that has none aiokafka knows, made a worker fail deep
inside a client with a traceback, or retry forever. ``check`` asks once at start and names what
is missing in one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiokafka
from aiokafka.conn import create_conn
from aiokafka.protocol.admin import ApiVersionRequest

from metrobus_app.config.settings import Settings
from metrobus_app.errors import MetrobusError
from metrobus_app.runtime.seams import client_api_versions
from metrobus_app.security.credentials import client_options

# API key -> name, of what every worker uses (Faust's consumer group, producer, topic creation).
NEEDED = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    12: "Heartbeat",
    13: "LeaveGroup",
    14: "SyncGroup",
    19: "CreateTopics",
}
# ... and what exactly-once mode adds (idempotent producers need InitProducerId too).
TRANSACTIONAL = {
    22: "InitProducerId",
    24: "AddPartitionsToTxn",
    25: "AddOffsetsToTxn",
    26: "EndTxn",
    28: "TxnOffsetCommit",
}


class BrokerIncompatible(MetrobusError):
    """The broker and this aiokafka share no version of an API the bus needs; the message names each one."""


def missing(
    broker: Mapping[int, tuple[int, int]], client: Mapping[int, set[int]], needed: Mapping[int, str]
) -> list[str]:
    """Each needed API with no version both sides know, as ``Name (broker vA-B, aiokafka vC-D)``."""
    gaps = []
    for key, name in sorted(needed.items()):
        ours = client.get(key, set())
        theirs = broker.get(key)
        if theirs is None:
            gaps.append(f"{name} (broker: none, aiokafka v{min(ours, default=0)}-{max(ours, default=0)})")
        elif not any(theirs[0] <= version <= theirs[1] for version in ours):
            gaps.append(f"{name} (broker v{theirs[0]}-{theirs[1]}, aiokafka v{min(ours)}-{max(ours)})")
    return gaps


ASK_TIMEOUT_S = 5.0


async def broker_api_versions(settings: Settings) -> dict[int, tuple[int, int]]:
    """API key -> (lowest, highest) version, as the first reachable bootstrap broker answers ApiVersions."""
    errors = []
    for address in settings.bootstrap_servers.split(","):
        host, _, port = address.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), client_id=f"{settings.app_id}-versions", **client_options(settings)),
                ASK_TIMEOUT_S,
            )
        except Exception as exc:
            errors.append(f"{address}: {type(exc).__name__}")
            continue
        try:
            answer = await asyncio.wait_for(conn.send(ApiVersionRequest()), ASK_TIMEOUT_S)
            return {key: (low, high) for key, low, high in answer.api_versions}
        finally:
            conn.close()
    raise ConnectionError("; ".join(errors) or "no bootstrap broker")


async def check(settings: Settings) -> None:
    """Raise ``BrokerIncompatible`` (one line) unless the broker speaks every API these settings need."""
    needed = dict(NEEDED)
    if settings.processing_guarantee == "exactly_once":
        needed.update(TRANSACTIONAL)
    elif settings.idempotence == "on":
        needed[22] = TRANSACTIONAL[22]
    gaps = missing(await broker_api_versions(settings), client_api_versions(), needed)
    if gaps:
        raise BrokerIncompatible(
            f"the broker at {settings.broker} and aiokafka {aiokafka.__version__} share no version of "
            f"{', '.join(gaps)}: use a broker of Kafka 2.1 to 4.x (or an aiokafka that speaks this one)"
        )
