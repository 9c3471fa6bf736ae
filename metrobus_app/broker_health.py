"""A worker and a broker that goes away: wait for it at start, and say so while it does not answer.

Faust's clients (aiokafka) reconnect by themselves with backoff and their sends wait in the
producer's buffer, so a broker that comes back within ``producer_request_timeout`` loses
nothing (``delivery.py`` covers the rest). What they do not do is say so clearly; and a worker
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

from .credentials import client_options
from .settings import Settings

log = logging.getLogger("metrobus.broker")

FIRST_DELAY_S, MAX_DELAY_S, PROBE_EVERY_S, PROBE_TIMEOUT_S = 1.0, 30.0, 5.0, 3.0


async def _probe(settings: Settings) -> None:
    """Raise unless the broker answers a metadata request within ``PROBE_TIMEOUT_S``."""
    client = AIOKafkaClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.app_id}-probe",
        request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
        **client_options(settings),
    )
    try:
        await asyncio.wait_for(client.bootstrap(), PROBE_TIMEOUT_S)
    finally:
        await client.close()


async def wait_for_broker(settings: Settings) -> None:
    """Return once the broker answers; until then log each try and wait with backoff."""
    delay, started, tries = FIRST_DELAY_S, time.monotonic(), 0
    while True:
        try:
            await _probe(settings)
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
        return


async def watch_broker(app: Any) -> None:
    """Log when the broker stops answering and when it is back (runs as a task of the worker)."""
    settings: Settings = app.settings
    away_since: float | None = None
    delay = FIRST_DELAY_S
    while True:
        try:
            await _probe(settings)
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
