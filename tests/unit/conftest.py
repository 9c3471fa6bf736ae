"""Fixtures for unit tests: the real app in Faust's test mode, and what left an agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import agents.busdriver
import agents.contactpoint
import agents.logstop
import agents.whitelist  # noqa: F401
from metrobus_app import app, bus

Sent = list[tuple[str, bytes | None, bytes]]


@pytest.fixture()
def test_app():
    """The app, finalized, with in-memory tables and flow control resumed (Faust's testing guide)."""
    app.finalize()
    app.flow_control.resume()
    return app


@pytest.fixture()
def sent() -> Iterator[Sent]:
    """Every (topic, key, value) the bus sends while the test runs, instead of a broker."""
    records: Sent = []

    async def record(topic: str, key: bytes | None, value: bytes) -> None:
        records.append((topic, key, value))

    real = bus.sender
    bus.sender = record
    yield records
    bus.sender = real
