"""Reading cache entries from Redis with SCAN-family cursors: never KEYS, never one giant reply."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import redis

from metrobus_app.errors import MetrobusError

BATCH = 1000


class RedisSourceError(MetrobusError):
    """Redis could not be read as asked: unreachable, no such key, or a key of another type."""


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str) -> redis.Redis:
    """A client for ``url`` that has answered a PING."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30, decode_responses=True)
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise RedisSourceError(f"cannot reach Redis at {redacted(url)}: {exc}") from None
    return client


def _expect(client: redis.Redis, key: str, kind: str) -> None:
    found = client.type(key)
    if found == "none":
        raise RedisSourceError(f"Redis has no key {key!r}")
    if found != kind:
        raise RedisSourceError(f"Redis key {key!r} is a {found}, not a {kind}")


def read_hash(client: redis.Redis, key: str) -> Iterator[tuple[str, str]]:
    """(field, value) of a hash, e.g. account -> email."""
    _expect(client, key, "hash")
    yield from _guard(client.hscan_iter(key, count=BATCH))


def read_set(client: redis.Redis, key: str, value: str) -> Iterator[tuple[str, str]]:
    """(member, ``value``) of a set, e.g. whitelisted emails."""
    _expect(client, key, "set")
    for member in _guard(client.sscan_iter(key, count=BATCH)):
        yield member, value


def read_keys(client: redis.Redis, pattern: str) -> Iterator[tuple[str, str]]:
    """(key without its prefix up to the last ':', value) of string keys matching ``pattern``."""
    batch: list[str] = []
    for key in _guard(client.scan_iter(match=pattern, count=BATCH, _type="STRING")):
        batch.append(key)
        if len(batch) == BATCH:
            yield from _values(client, batch)
            batch = []
    yield from _values(client, batch)


def _values(client: redis.Redis, keys: list[str]) -> Iterator[tuple[str, str]]:
    if not keys:
        return
    try:
        values = client.mget(keys)
    except redis.RedisError as exc:
        raise RedisSourceError(f"reading Redis failed: {exc}") from None
    for key, value in zip(keys, values, strict=True):
        if value is not None:
            yield key.rsplit(":", 1)[-1], value


def _guard(items: Iterator) -> Iterator:  # type: ignore[type-arg]
    try:
        yield from items
    except redis.RedisError as exc:
        raise RedisSourceError(f"reading Redis failed: {exc}") from None
