"""The private names of aiokafka that the bus cannot do without, each in one place with why.

Checked at import (``check``): an aiokafka that renamed one fails at the worker's start with
one line naming it, not with a wrong commit later.
"""

from __future__ import annotations

from typing import Any

import aiokafka

from metrobus_app.errors import ConfigError


def in_transaction(producer: aiokafka.AIOKafkaProducer) -> bool:
    """Whether a transactional producer has a transaction open.

    aiokafka has no public question for it, and aborting outside a transaction trips an
    ``assert`` of its state machine (which ``python -O`` skips, corrupting the state).
    """
    manager: Any = producer._txn_manager
    return manager is not None and bool(manager.is_in_transaction())


def check() -> None:
    """Raise ``ConfigError`` naming what is missing when this aiokafka lacks a name used here."""
    from aiokafka.producer.transaction_manager import TransactionManager

    if not hasattr(TransactionManager, "is_in_transaction"):
        raise ConfigError(
            f"aiokafka {aiokafka.__version__} has no TransactionManager.is_in_transaction, which exactly-once "
            "mode needs (runtime/seams.py): use aiokafka >=0.12,<0.15"
        )


def client_api_versions() -> dict[int, set[int]]:
    """API key -> the versions aiokafka can send, from its request builders.

    Each ``aiokafka.protocol.api.Request`` subclass lists its wire versions in ``_CLASSES``
    (private): the only record of what aiokafka negotiates with (``runtime/broker_versions.py``).
    """
    import aiokafka.protocol.admin
    import aiokafka.protocol.commit
    import aiokafka.protocol.coordination
    import aiokafka.protocol.fetch
    import aiokafka.protocol.group
    import aiokafka.protocol.metadata
    import aiokafka.protocol.offset
    import aiokafka.protocol.produce
    import aiokafka.protocol.transaction  # noqa: F401  # every request builder, registered as a subclass
    from aiokafka.protocol.api import Request

    versions: dict[int, set[int]] = {}
    pending = list(Request.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        for struct in getattr(cls, "_CLASSES", ()):
            versions.setdefault(cls.API_KEY, set()).add(struct.API_VERSION)
    return versions
