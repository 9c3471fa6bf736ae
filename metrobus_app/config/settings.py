"""Metrobus settings: every knob read once from ``METROBUS_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from metrobus_app.config.checks import check
from metrobus_app.errors import ConfigError


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _setting(default: Any, env: str, doc: str) -> Any:
    # A password stays out of repr(settings) too, so no log line or traceback can carry it.
    return field(default=default, repr=not _is_secret(env), metadata={"env": env, "doc": doc})


def _is_secret(env: str) -> bool:
    return "PASSWORD" in env or env == "METROBUS_ADMIN_TOKEN"


@dataclass(frozen=True)
class Settings:
    """The bus's configuration; ``Settings.from_env()`` reads it from the environment."""

    app_id: str = _setting("metrobus", "METROBUS_APP_ID", "Faust app id: consumer group and table prefix.")
    broker: str = _setting("kafka://localhost:9092", "METROBUS_BROKER", "Kafka broker URL(s), ';'-separated.")
    store: str = _setting("rocksdb://", "METROBUS_STORE", "Table store: rocksdb:// (default) or memory://.")
    data_dir: Path = _setting(Path("var/metrobus"), "METROBUS_DATA_DIR", "Worker state (RocksDB tables) lives here.")
    web_port: int = _setting(6066, "METROBUS_WEB_PORT", "Port of the worker's web server (stats, caches).")
    web_bind: str = _setting("127.0.0.1", "METROBUS_WEB_BIND", "Address the worker's web server binds.")
    partitions: int = _setting(4, "METROBUS_PARTITIONS", "Partitions of every stop topic the bus creates.")
    source_topic: str = _setting("Source", "METROBUS_SOURCE_TOPIC", "Raw records enter the bus here.")
    error_topic: str = _setting("Error", "METROBUS_ERROR_TOPIC", "Dead-letter topic.")
    stops: tuple[str, ...] = _setting(
        (), "METROBUS_STOPS", "Comma-separated stops this worker runs (busdriver included); empty runs all."
    )
    external_stops: tuple[str, ...] = _setting(
        (), "METROBUS_EXTERNAL_STOPS", "Comma-separated stops served outside this app (e.g. a 0.0.x stop)."
    )
    redis_url: str = _setting(
        "redis://127.0.0.1:6379/0", "METROBUS_REDIS_URL", "Redis that cache warms read from (--redis-url overrides)."
    )
    linger_ms: int = _setting(
        5,
        "METROBUS_LINGER_MS",
        "Longest wait to fill a batch; when every stop of the worker waits for records, a batch goes at once. "
        "Faust's default is 0.",
    )
    fetch_wait_ms: int = _setting(
        0,
        "METROBUS_FETCH_WAIT_MS",
        "Longest a fetch waits for data; 0 picks by broker: 10 on Tansu (which answers a waiting fetch only "
        "after about half of it), 500 on Apache Kafka. Faust hard-codes 1500 ms.",
    )
    event_loop: str = _setting(
        "uvloop", "METROBUS_EVENT_LOOP", "uvloop, or asyncio (the standard library's); faust -L / FAUST_LOOP wins."
    )
    batch_bytes: int = _setting(
        65_536,
        "METROBUS_BATCH_BYTES",
        "Largest batch the producer sends to one partition (Faust's producer_max_batch_size; its default 16384).",
    )
    commit_interval_ms: int = _setting(
        2_800,
        "METROBUS_COMMIT_INTERVAL_MS",
        "How often a worker commits consumed offsets (Faust's broker_commit_interval).",
    )
    max_message_bytes: int = _setting(
        1_048_576, "METROBUS_MAX_MESSAGE_BYTES", "Larger values are dead-lettered unread."
    )
    retry_in_place_max_ms: int = _setting(
        1_000,
        "METROBUS_RETRY_IN_PLACE_MAX_MS",
        "A stop's retry waits up to this long in place (its partition waits, order per key kept); a longer wait "
        "goes through a delay topic while the stop goes on.",
    )
    retry_delay_tiers: tuple[str, ...] = _setting(
        ("5", "30", "300"),
        "METROBUS_RETRY_DELAY_TIERS",
        "Seconds of the bus's delay topics (<app id>-retry-<seconds>s), comma-separated; a wait goes to the "
        "shortest tier at least as long (else the longest) and leaves it when due.",
    )
    tracing: str = _setting(
        "off",
        "METROBUS_TRACING",
        "on: a span per hop with OpenTelemetry, exported as the OTEL_* variables say (OTLP by default; needs "
        "pip install 'metrobus[tracing]' unless an SDK is set up already); off: no tracing work at all.",
    )
    trace_sample_ratio: float = _setting(
        1.0,
        "METROBUS_TRACE_SAMPLE_RATIO",
        "Share of new traces kept (0 to 1); a trace a producer started keeps its own decision.",
    )
    max_hops: int = _setting(
        64, "METROBUS_MAX_HOPS", "Most stops a message may be sent to; a route's header.max_hops overrides it."
    )
    max_route_stops: int = _setting(
        256, "METROBUS_MAX_ROUTE_STOPS", "Longer routes (and histories) are dead-lettered as InvalidEnvelope."
    )
    max_replays: int = _setting(
        3, "METROBUS_MAX_REPLAYS", "How often 'deadletters replay' sends one message back before it refuses."
    )
    processing_guarantee: str = _setting(
        "at_least_once", "METROBUS_PROCESSING_GUARANTEE", "at_least_once, or exactly_once (Kafka transactions)."
    )
    shutdown_timeout_s: float = _setting(
        15.0,
        "METROBUS_SHUTDOWN_TIMEOUT_S",
        "Longest a worker takes to stop once told to (SIGTERM, SIGINT, a crash): it commits what it can in that "
        "time, then ends anyway, its open transactions left for the broker to abort. Under Kubernetes' 30 s grace.",
    )
    idempotence: str = _setting(
        "on",
        "METROBUS_IDEMPOTENCE",
        "on: the bus's producers are idempotent (acks=all; the broker drops a batch resent after a lost answer, "
        "so a broker failover duplicates nothing they send); off: for a broker that refuses them.",
    )
    modules: tuple[str, ...] = _setting(
        ("agents",), "METROBUS_MODULES", "Comma-separated packages of stops and commands the app discovers."
    )
    topic_replication: int = _setting(1, "METROBUS_REPLICATION", "Replication factor of created topics.")
    fates_max: int = _setting(
        100_000, "METROBUS_FATES_MAX", "Most messages whose fate a worker keeps for /metrobus/messages/; 0: none."
    )
    fates_ttl_s: int = _setting(
        3600, "METROBUS_FATES_TTL_S", "Seconds a message's fate is kept (also the fates topic's retention)."
    )
    security_protocol: str = _setting(
        "PLAINTEXT", "METROBUS_SECURITY_PROTOCOL", "Broker security: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: str = _setting(
        "PLAIN", "METROBUS_SASL_MECHANISM", "SASL mechanism (SASL_*): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    sasl_username: str = _setting("", "METROBUS_SASL_USERNAME", "SASL user name (SASL_* only).")
    sasl_password: str = _setting("", "METROBUS_SASL_PASSWORD", "SASL password (SASL_* only); shown as *** when set.")
    ssl_cafile: str = _setting(
        "", "METROBUS_SSL_CAFILE", "CA bundle (PEM) to verify the broker with (SSL, SASL_SSL); empty: the system's CAs."
    )
    ssl_certfile: str = _setting(
        "", "METROBUS_SSL_CERTFILE", "Client certificate (PEM) for brokers that require mutual TLS (SSL, SASL_SSL)."
    )
    ssl_keyfile: str = _setting(
        "", "METROBUS_SSL_KEYFILE", "Private key (PEM) of METROBUS_SSL_CERTFILE when it is not in that file."
    )
    admin_token: str = _setting(
        "", "METROBUS_ADMIN_TOKEN", "Bearer token the web server's write actions need; unset: writes disabled."
    )
    admin_token_file: str = _setting(
        "", "METROBUS_ADMIN_TOKEN_FILE", "File holding the admin token (instead of METROBUS_ADMIN_TOKEN)."
    )
    web_auth: str = _setting(
        "writes", "METROBUS_WEB_AUTH", "What needs the admin token: writes, or all (every view but the dashboard page)."
    )
    web_max_body_bytes: int = _setting(
        65_536, "METROBUS_WEB_MAX_BODY_BYTES", "Largest request body a write view takes (413 above)."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``), falling back to defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.metadata["env"], type(f.default), raw)
        settings = cls(**values)
        check(settings)
        return settings

    @property
    def bootstrap_servers(self) -> str:
        """The broker URLs as a Kafka client's bootstrap list: ``host:port,host:port``."""
        return ",".join(url.split("://", 1)[-1].strip("/") for url in self.broker.split(";") if url.strip())

    def describe(self) -> list[tuple[str, str, str, str]]:
        """Each setting as (environment variable, value, default, meaning); a set password shows as ``***``."""
        return [
            (
                f.metadata["env"],
                _show(f.metadata["env"], getattr(self, f.name)),
                _show("", f.default),
                f.metadata["doc"],
            )
            for f in fields(self)
        ]


def _show(env: str, value: Any) -> str:
    if _is_secret(env):
        return "***" if value else ""
    if isinstance(value, str) and "://" in value:
        from metrobus_app.config.redaction import redact  # a URL's password (redis://:pass@host) shows as ***

        return redact(value)
    return ",".join(value) if isinstance(value, tuple) else str(value)


def _convert(env: str, kind: type, raw: str) -> Any:
    if kind is tuple:
        return _split(raw)
    if kind is float:
        try:
            number = float(raw)
        except ValueError:
            raise ConfigError(f"{env}={raw!r} is not a number") from None
        if not 0 <= number < float("inf"):
            raise ConfigError(f"{env}={raw!r} must be a number of 0 or more")
        return number
    if kind is int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{env}={raw!r} is not a whole number") from None
        if value < 0:
            raise ConfigError(f"{env}={raw!r} must not be negative")
        return value
    if issubclass(kind, Path):
        return Path(raw)
    return raw
