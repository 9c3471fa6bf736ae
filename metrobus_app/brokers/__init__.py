"""Brokers this machine can run for the demo, tests and benchmarks: Tansu (embedded) and Apache Kafka."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .kafka import KafkaBroker
from .ports import free_port, port_open
from .tansu import EmbeddedBroker

BROKERS = ("tansu", "kafka")


def local_broker(kind: str, *, port: int | None = None, log_path: Path | None = None) -> EmbeddedBroker | KafkaBroker:
    """A broker of ``kind`` (``tansu`` or ``kafka``) on 127.0.0.1, not yet started."""
    if kind == "tansu":
        return EmbeddedBroker(port, log_path=log_path)
    if kind == "kafka":
        return KafkaBroker(port=port, log_path=log_path)
    raise ConfigError(f"unknown broker {kind!r}: use {' or '.join(BROKERS)}")


__all__ = ["BROKERS", "EmbeddedBroker", "KafkaBroker", "free_port", "local_broker", "port_open"]
