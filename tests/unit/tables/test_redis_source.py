"""Reading cache entries from a real Redis with SCAN-family cursors."""

import pytest

from tables.redis_source import RedisSourceError, connect, read_hash, read_keys, read_set, redacted


@pytest.fixture()
def client(redis_url):
    client = connect(redis_url)
    client.hset("emails", mapping={str(1000000 + i): f"u{i}@x" for i in range(2500)})
    client.sadd("whitelist", *[f"u{i}@x" for i in range(0, 2500, 2)])
    client.mset({f"email:{1000000 + i}": f"u{i}@x" for i in range(1500)})
    client.set("not-a-hash", "x")
    return client


def test_read_hash_set_and_keys(client):
    assert dict(read_hash(client, "emails")) == {str(1000000 + i): f"u{i}@x" for i in range(2500)}
    assert dict(read_set(client, "whitelist", "1")) == {f"u{i}@x": "1" for i in range(0, 2500, 2)}
    assert dict(read_keys(client, "email:*")) == {str(1000000 + i): f"u{i}@x" for i in range(1500)}


def test_the_commands_used_are_scans_never_keys(client):
    client.config_resetstat()
    list(read_hash(client, "emails"))
    list(read_set(client, "whitelist", "1"))
    list(read_keys(client, "email:*"))
    used = {name.removeprefix("cmdstat_") for name in client.info("commandstats")}
    assert {"hscan", "sscan", "scan", "mget"} <= used
    assert not used & {"keys", "hgetall", "smembers"}


@pytest.mark.parametrize(
    ("read", "says"),
    [
        (lambda c: read_hash(c, "not-a-hash"), "Redis key 'not-a-hash' is a string, not a hash"),
        (lambda c: read_set(c, "emails", "1"), "Redis key 'emails' is a hash, not a set"),
        (lambda c: read_hash(c, "missing"), "Redis has no key 'missing'"),
    ],
)
def test_a_wrong_or_missing_key_says_so(client, read, says):
    with pytest.raises(RedisSourceError, match=says):
        list(read(client))


def test_an_unreachable_redis_says_where_without_the_password():
    with pytest.raises(RedisSourceError, match=r"cannot reach Redis at redis://:\*\*\*@127\.0\.0\.1:1/0"):
        connect("redis://:s3cret@127.0.0.1:1/0")
    assert redacted("redis://user:pw@h:6379/0") == "redis://user:***@h:6379/0"
    assert redacted("redis://h:6379") == "redis://h:6379"
