"""InitProducerId v3 for aiokafka, so that its transactional producers work on the embedded broker.

aiokafka 0.14 knows only version 0 of InitProducerId, the request that gives a producer its id
and epoch. Tansu 0.6, the embedded broker, answers it with an UnknownError: it reads the
producer id and epoch fields that version 3 (Kafka 2.5, KIP-360) added. kafka-python sends v3
and works. This teaches aiokafka v3 too; the version is still negotiated per broker (ApiVersions),
so a broker without v3 gets v0 as before. Installed only on Tansu, before a producer of the bus
asks for an id there (an idempotent one, ``clients.producer_options``, or a transactional one in
``exactly_once``): by ``MetrobusApp.on_first_start`` in a worker, by ``ready_for_producer_ids``
in a command. Apache Kafka takes aiokafka's v0 as it is, so there it stays off.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.producer import sender as aiokafka_sender
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import InitProducerIdRequest_v0
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields

from metrobus_app.config.settings import Settings
from metrobus_app.runtime.broker_health import broker_kind, probe

log = logging.getLogger("metrobus.compat")


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


async def ready_for_producer_ids(settings: Settings, kind: str | None = None) -> str | None:
    """Before a producer asks for its id: v3 if the broker is Tansu. The broker's kind (None: it did not answer).

    ``kind`` is the broker's when known (a worker knows it from its start); else one probe asks
    (a command): a broker that does not answer is left to the producer's own start to report.
    """
    if kind is None:
        try:
            kind = broker_kind(await probe(settings))
        except Exception:
            return None
    if kind == "tansu" and aiokafka_sender.InitProducerIdRequest is not InitProducerIdRequest:
        install_init_producer_id_v3()
        log.info("producer ids: InitProducerId v3 for Tansu (runtime/compat.py)")
    return kind
