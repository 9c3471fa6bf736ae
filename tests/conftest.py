"""Shared test set-up: the app on the in-memory store (set before it is imported), a Redis of our own."""

import os

os.environ.setdefault("METROBUS_STORE", "memory://")

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from metrobus_app.brokers import free_port


@pytest.fixture()
def redis_url(tmp_path) -> Iterator[str]:
    """A redis-server of the test's own on a free port (``.ci/run`` installs the binary)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: apt-get install redis-server (.ci/run does it)"
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)
