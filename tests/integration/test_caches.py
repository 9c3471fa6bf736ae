"""Caches on real workers: warm from files and Redis, remove, replace, restart, several workers."""

from __future__ import annotations

import shutil
import urllib.parse

import pytest
import redis

from metrobus_app.brokers import free_port

from .conftest import Worker, bus_env, new_broker, read_topic, run_cli

pytestmark = pytest.mark.integration

EMAILS = {str(1000000 + i): f"user{i}@example.com" for i in range(300)}
WHITELIST = [f"user{i}@example.com" for i in range(0, 300, 3)]


@pytest.fixture()
def files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "emails.dat").write_text("".join(f"{a},{e}\n" for a, e in EMAILS.items()))
    (data / "whitelist.dat").write_text("".join(f"{e}\n" for e in WHITELIST))
    return data


class Cli:
    """``faust -A metrobus_app ...`` against the test's broker."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str) -> str:
        result = run_cli(self.env, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture()
def cli(broker, tmp_path) -> Cli:
    return Cli(bus_env(broker.url, tmp_path / "cli"))


def lookup(worker, cache: str, key: str) -> str | None:
    return worker.get(f"/metrobus/caches/{cache}/{urllib.parse.quote(key)}")["value"]


def test_warm_rewarm_remove_and_replace_from_files(cli, workers, files, tmp_path):
    worker = workers().wait_ready()
    out = cli("warm", "--emails", str(files / "emails.dat"), "--whitelist", str(files / "whitelist.dat"))
    assert "emails: 300 added, 0 changed, 0 removed, 0 unchanged; 300 entries now" in out
    assert "whitelist: 100 added, 0 changed, 0 removed, 0 unchanged; 100 entries now" in out
    worker.wait_caches({"emails": 300, "whitelist": 100})
    assert lookup(worker, "emails", "1000007") == "user7@example.com"
    assert lookup(worker, "whitelist", "user3@example.com") == "1"

    again = cli("warm", "--emails", str(files / "emails.dat"), "--whitelist", str(files / "whitelist.dat"))
    assert "emails: 0 added, 0 changed, 0 removed, 300 unchanged; 300 entries now" in again

    removed = tmp_path / "removed.dat"
    removed.write_text("user0@example.com\nuser3@example.com\nnobody@example.com\n")
    out = cli("remove", "whitelist", "--file", str(removed))
    assert "whitelist: 0 added, 0 changed, 2 removed, 1 unchanged; 98 entries now" in out
    worker.wait_caches({"emails": 300, "whitelist": 98})
    assert lookup(worker, "whitelist", "user3@example.com") is None
    assert lookup(worker, "whitelist", "user6@example.com") == "1"

    smaller = tmp_path / "emails-smaller.dat"
    smaller.write_text("1000001,new1@example.com\n1000002,user2@example.com\nbad line\n")
    replaced = run_cli(cli.env, "warm", "--emails", str(smaller), "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert "emails: 0 added, 1 changed, 298 removed, 1 unchanged; 2 entries now" in replaced.stdout
    assert f"{smaller}:3: expected 'account,email'" in replaced.stderr
    worker.wait_caches({"emails": 2, "whitelist": 98})
    assert lookup(worker, "emails", "1000001") == "new1@example.com"
    assert lookup(worker, "emails", "1000007") is None


def test_warm_from_redis_hash_set_and_keys_and_a_set_diff(cli, workers, redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset("account_emails", mapping=EMAILS)
    client.sadd("whitelist", *WHITELIST)
    client.mset({f"email:{a}": e for a, e in list(EMAILS.items())[:10]})
    worker = workers().wait_ready()

    cli("warm", "--emails-hash", "account_emails", "--whitelist-set", "whitelist", "--redis-url", redis_url)
    worker.wait_caches({"emails": 300, "whitelist": 100})

    client.srem("whitelist", "user0@example.com", "user3@example.com")
    client.sadd("whitelist", "extra@example.com")
    out = cli("warm", "--whitelist-set", "whitelist", "--replace", "--redis-url", redis_url)
    assert "whitelist: 1 added, 0 changed, 2 removed, 98 unchanged; 99 entries now" in out
    worker.wait_caches({"emails": 300, "whitelist": 99})
    assert lookup(worker, "whitelist", "extra@example.com") == "1"
    assert lookup(worker, "whitelist", "user0@example.com") is None

    client.set("email:1000001", "changed@example.com")
    out = cli("warm", "--emails-keys", "email:*", "--redis-url", redis_url)
    assert "emails: 0 added, 1 changed, 0 removed, 9 unchanged; 300 entries now" in out
    worker.wait_for("/metrobus/caches/emails/1000001", lambda got: got["value"] == "changed@example.com")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--emails-hash", "account_emails", "--redis-url", "redis://:pw@127.0.0.1:1/0"], "cannot reach Redis at"),
        (["--emails-hash", "no_such_key"], "Redis has no key 'no_such_key'"),
        (["--whitelist-set", "account_emails"], "Redis key 'account_emails' is a hash, not a set"),
    ],
)
def test_a_failed_warm_says_why_in_one_line_and_changes_nothing(broker, tmp_path, files, redis_url, args, says):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset("account_emails", mapping={"1000001": "x@example.com"})
    env = bus_env(broker.url, tmp_path / "cli", METROBUS_REDIS_URL=redis_url)
    assert run_cli(env, "warm", "--emails", str(files / "emails.dat"), "--whitelist", str(files / "whitelist.dat"))
    changelog_before = read_topic(broker, "metrobus-emails-changelog", 300, settle=0.5)

    result = run_cli(env, "warm", "--replace", *args)
    assert result.returncode == 1
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert "pw@" not in result.stderr
    assert read_topic(broker, "metrobus-emails-changelog", len(changelog_before), settle=1) == changelog_before


def test_a_restarted_worker_resumes_and_an_empty_one_loads_everything(cli, workers, files, tmp_path):
    cli("warm", "--emails", str(files / "emails.dat"), "--whitelist", str(files / "whitelist.dat"))
    first = workers("first").wait_ready()
    first.wait_caches({"emails": 300, "whitelist": 100})
    first.stop()
    cli("remove", "emails", "1000001", "1000002")

    again = workers("first").wait_ready()  # the same data dir
    again.wait_caches({"emails": 298, "whitelist": 100})
    assert "cache emails: resuming after offset 299 with 300 entries" in again.log_text()
    assert "reloading" not in again.log_text()

    shutil.rmtree(tmp_path / "fresh-data", ignore_errors=True)
    fresh = workers("fresh").wait_ready()
    fresh.wait_caches({"emails": 298, "whitelist": 100})
    assert "resuming" not in fresh.log_text()


def test_worker_state_from_another_broker_is_reloaded(cli, workers, files, tmp_path):
    with new_broker(log_path=tmp_path / "old-broker.log") as old:
        warmed = run_cli(bus_env(old.url, tmp_path / "cli"), "warm", "--emails", str(files / "emails.dat"))
        assert warmed.returncode == 0
        worker = Worker(bus_env(old.url, tmp_path / "stale-data"), tmp_path / "old.log", free_port()).start()
        try:
            worker.wait_ready().wait_caches({"emails": 300, "whitelist": 0})
        finally:
            worker.stop()
    one = tmp_path / "one.dat"
    one.write_text("1000042,only@example.com\n")
    cli("warm", "--emails", str(one))
    stale = workers("stale").wait_ready()  # the old data dir, a new broker with other content
    stale.wait_caches({"emails": 1, "whitelist": 0})
    assert lookup(stale, "emails", "1000042") == "only@example.com"
    assert "reloading" in stale.log_text()


def test_every_worker_holds_the_whole_cache(cli, workers, files, tmp_path):
    running = [workers(f"w{i}").wait_ready() for i in range(3)]
    cli("warm", "--emails", str(files / "emails.dat"), "--whitelist", str(files / "whitelist.dat"))
    for worker in running:
        worker.wait_caches({"emails": 300, "whitelist": 100})
    cli("remove", "whitelist", "user0@example.com")
    replacement = tmp_path / "replace.dat"
    replacement.write_text("".join(f"{a},{e}\n" for a, e in list(EMAILS.items())[:150]))
    cli("warm", "--emails", str(replacement), "--replace")
    for worker in running:
        worker.wait_caches({"emails": 150, "whitelist": 99})
        assert lookup(worker, "emails", "1000149") == "user149@example.com"
        assert lookup(worker, "emails", "1000150") is None


def test_a_fresh_worker_drops_nothing_while_its_caches_load(cli, workers, files):
    cli("warm", "--emails", str(files / "emails.dat"), "--whitelist", str(files / "whitelist.dat"))
    cli("push", "--count", "200", "--accounts", "300", "--seed", "4")  # waiting before any worker runs
    worker = workers().wait_ready()
    # Every pushed account (1000000..1000299) has an email: a drop would mean a lookup before the load.
    stats = worker.wait_for("/metrobus/stats/", lambda s: s["stops"].get("AddEmail", {}).get("received") == 200)
    assert stats["stops"]["AddEmail"]["dropped"] == 0
    assert stats["stops"]["AddEmail"]["forwarded"] == 200
