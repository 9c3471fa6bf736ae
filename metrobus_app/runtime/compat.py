"""InitProducerId v3 for aiokafka, so that its transactional producers work on the embedded broker.

aiokafka 0.14 knows only version 0 of InitProducerId, the request that gives a producer its id
and epoch. Tansu 0.6, the embedded broker, answers it with an UnknownError: it reads the
producer id and epoch fields that version 3 (Kafka 2.5, KIP-360) added. kafka-python sends v3
and works. This teaches aiokafka v3 too; the version is still negotiated per broker (ApiVersions),
so a broker without v3 gets v0 as before (Apache Kafka speaks v3 since 2.5). Installed before a
producer of the bus asks for an id: an idempotent one (``clients.producer_options``) or a
transactional one (``exactly_once``, ``MetrobusApp.on_first_start``).
"""

from __future__ import annotations

from typing import Any

from aiokafka.producer import sender as aiokafka_sender
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import InitProducerIdRequest_v0
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields


class InitProducerIdResponse_v3(Response):
    API_KEY = 22
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class InitProducerIdRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 22
    API_VERSION = 3
    RESPONSE_TYPE = InitProducerIdResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("transaction_timeout_ms", Int32),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class InitProducerIdRequest(Request[InitProducerIdRequest_v0 | InitProducerIdRequest_v3]):
    """aiokafka's request with v3 added: no producer id or epoch yet (-1), as a new producer sends."""

    API_KEY = 22

    def __init__(self, transactional_id: str | None, transaction_timeout_ms: int) -> None:
        self._transactional_id = transactional_id
        self._transaction_timeout_ms = transaction_timeout_ms

    def build(self, request_struct_class: Any) -> Any:
        if request_struct_class.API_VERSION >= 3:
            return request_struct_class(self._transactional_id, self._transaction_timeout_ms, -1, -1, {})
        return request_struct_class(self._transactional_id, self._transaction_timeout_ms)


def install_init_producer_id_v3() -> None:
    """Make aiokafka's producers ask for their id with v3 where the broker speaks it."""
    aiokafka_sender.InitProducerIdRequest = InitProducerIdRequest
