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
