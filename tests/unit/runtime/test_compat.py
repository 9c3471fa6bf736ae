"""InitProducerId v3 is taught to aiokafka on Tansu only; Apache Kafka keeps aiokafka's own v0."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiokafka.producer import sender as aiokafka_sender
from aiokafka.protocol.transaction import InitProducerIdRequest as Own

from metrobus_app import Settings
from metrobus_app.brokers import free_port
from metrobus_app.runtime.compat import InitProducerIdRequest, ready_for_producer_ids


@pytest.fixture()
def aiokafka_own() -> Iterator[type]:
    """aiokafka's own request (v0 only) for the test, and whatever was installed before it afterwards."""
    before = aiokafka_sender.InitProducerIdRequest
    aiokafka_sender.InitProducerIdRequest = Own
    yield Own
    aiokafka_sender.InitProducerIdRequest = before


async def test_v3_on_tansu_only(aiokafka_own):
    settings = Settings()
    assert await ready_for_producer_ids(settings, "kafka") == "kafka"
    assert aiokafka_sender.InitProducerIdRequest is aiokafka_own
    assert await ready_for_producer_ids(settings, "tansu") == "tansu"
    assert aiokafka_sender.InitProducerIdRequest is InitProducerIdRequest


async def test_a_broker_that_does_not_answer_is_left_to_the_producer_s_start(aiokafka_own):
    settings = Settings(broker=f"kafka://127.0.0.1:{free_port()}")
    assert await ready_for_producer_ids(settings) is None
    assert aiokafka_sender.InitProducerIdRequest is aiokafka_own
