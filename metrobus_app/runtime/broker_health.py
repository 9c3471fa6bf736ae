"""A worker and a broker that goes away: wait for it at start, and say so while it does not answer.

Faust's clients (aiokafka) reconnect by themselves with backoff and their sends wait in the
producer's buffer, so a broker that comes back within ``producer_request_timeout`` loses
nothing (``runtime/delivery.py`` covers the rest). What they do not do is say so clearly; and a worker
started before its broker exits at once. So:

- ``wait_for_broker``: before Faust's clients start, a worker waits for the broker, logging
  each failed try and the next delay (1 s, doubling up to 30 s);
- ``watch_broker``: while the worker runs, one small metadata request every 5 s (its own
  connection, not the hot path); when the broker does not answer it logs a warning and then
  tries with backoff, and logs again when the broker answers, with how long it was away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.metadata import MetadataRequest

from metrobus_app.config.settings import Settings
from metrobus_app.runtime.broker_versions import BrokerIncompatible
from metrobus_app.runtime.broker_versions import check as check_broker_versions
from metrobus_app.security.credentials import client_options

log = logging.getLogger("metrobus.broker")

FIRST_DELAY_S, MAX_DELAY_S, PROBE_EVERY_S, PROBE_TIMEOUT_S = 1.0, 30.0, 5.0, 3.0


TANSU_CLUSTER_ID = "tansu_cluster"  # what Tansu calls its cluster unless started with --cluster-id
FETCH_WAIT_MS = {"tansu": 10, "kafka": 500}
BROKER_NAMES = {"tansu": "Tansu", "kafka": "Kafka"}


def broker_kind(cluster_id: str | None) -> str:
    """``tansu`` for a broker that names its cluster as Tansu does by default, else ``kafka``."""
    return "tansu" if cluster_id == TANSU_CLUSTER_ID else "kafka"


def fetch_wait_ms(settings: Settings, kind: str) -> int:
    """METROBUS_FETCH_WAIT_MS if set, else what suits the broker.

    Tansu answers a waiting fetch only after about half the wait, so a stop waits 10 ms at most
    there; Apache Kafka answers as soon as a record arrives, so a longer wait costs no latency
    and spares an idle worker its empty fetches (4.0% of a core at 10 ms, 0.7% at 500 ms).
    """
    return settings.fetch_wait_ms or FETCH_WAIT_MS[kind]


async def probe(settings: Settings) -> str | None:
    """The cluster id the broker names in a metadata answer; raise unless it answers within ``PROBE_TIMEOUT_S``."""
    client = AIOKafkaClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.app_id}-probe",
        request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
        **client_options(settings),
    )
    try:
        await asyncio.wait_for(client.bootstrap(), PROBE_TIMEOUT_S)
        node = next(iter(client.cluster.brokers())).nodeId
        answer = await asyncio.wait_for(client.send(node, MetadataRequest([])), PROBE_TIMEOUT_S)
        return getattr(answer, "cluster_id", None)  # Metadata v2 and later carry it
    finally:
        await client.close()


async def wait_for_broker(settings: Settings) -> str:
    """Return the broker's kind (see ``broker_kind``) once it answers; until then log each try and wait with backoff.

    ``BrokerIncompatible`` when it answers but shares no version of an API the bus needs.
    """
    delay, started, tries = FIRST_DELAY_S, time.monotonic(), 0
    while True:
        try:
            await check_broker_versions(settings)  # first: a broker it cannot talk to is named in one line
            cluster_id = await probe(settings)
        except BrokerIncompatible:
            raise
        except Exception as exc:
            tries += 1
            log.warning(
                "broker at %s does not answer (%s: %s); trying again in %.0f s",
                settings.broker,
                type(exc).__name__,
                exc or "no answer in time",
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        if tries:
            log.info("broker at %s answers after %.1f s; starting", settings.broker, time.monotonic() - started)
        return broker_kind(cluster_id)


async def watch_broker(app: Any) -> None:
    """Log when the broker stops answering and when it is back (runs as a task of the worker)."""
    settings: Settings = app.settings
    away_since: float | None = None
    delay = FIRST_DELAY_S
    while True:
        try:
            await probe(settings)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if away_since is None:
                away_since = time.monotonic()
                log.warning(
                    "broker at %s does not answer (%s); the worker keeps trying with backoff, "
                    "messages wait in their topics and unsent ones in the producer",
                    settings.broker,
                    type(exc).__name__,
                )
            else:
                log.warning(
                    "broker at %s still does not answer after %.0f s; next try in %.0f s",
                    settings.broker,
                    time.monotonic() - away_since,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        if away_since is not None:
            log.warning(
                "broker at %s answers again after %.1f s away; the worker resumes",
                settings.broker,
                time.monotonic() - away_since,
            )
            away_since, delay = None, FIRST_DELAY_S
        await asyncio.sleep(PROBE_EVERY_S)
