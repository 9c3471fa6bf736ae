"""A broker that shares no version of an API the bus needs: the worker ends with one line naming it.

No broker of such versions runs here (Kafka 4.4 still speaks what aiokafka 0.14 sends), so the
broker is a stand-in that answers ApiVersions as a future Kafka might: Produce only from v9 and
Fetch only from v12 (the KIP-896 kind of removal that Kafka 4.0 made for older versions), the
rest as Kafka 4.4 answers. The worker is real; nothing else of it is replaced.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
from collections.abc import Iterator

import pytest

from metrobus_app.brokers import free_port

from .conftest import FAUST, ROOT, bus_env

pytestmark = pytest.mark.integration

# What Kafka 4.4.0 answers for the APIs the bus uses, with Produce and Fetch moved past aiokafka's.
TOO_NEW = {0: (9, 13), 1: (12, 18), 2: (1, 10), 3: (0, 13), 8: (2, 10), 9: (1, 10), 10: (0, 6), 11: (0, 9)}
TOO_NEW |= {12: (0, 4), 13: (0, 5), 14: (0, 5), 18: (0, 4), 19: (2, 7), 22: (0, 6), 24: (0, 5), 25: (0, 4)}
TOO_NEW |= {26: (0, 5), 28: (0, 5)}


def _answer(sock: socket.socket) -> None:
    """Answer every ApiVersions request (v0 body: error, [key, min, max]); close on anything else."""
    with sock:
        while True:
            head = sock.recv(4, socket.MSG_WAITALL)
            if len(head) < 4:
                return
            request = sock.recv(struct.unpack(">i", head)[0], socket.MSG_WAITALL)
            api_key, version, correlation = struct.unpack(">hhi", request[:8])
            if api_key != 18:
                return
            body = struct.pack(">hi", 0, len(TOO_NEW)) + b"".join(
                struct.pack(">hhh", key, low, high) for key, (low, high) in sorted(TOO_NEW.items())
            )
            if version >= 1:
                body += struct.pack(">i", 0)  # throttle_time_ms
            sock.sendall(struct.pack(">ii", len(body) + 4, correlation) + body)


@pytest.fixture()
def too_new_broker() -> Iterator[int]:
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_answer, args=(sock,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    server.close()


def test_a_worker_that_meets_a_broker_too_new_for_its_client_ends_with_one_line(too_new_broker, tmp_path):
    env = bus_env(f"kafka://127.0.0.1:{too_new_broker}", tmp_path / "data", METROBUS_WEB_PORT=str(free_port()))
    worker = [*FAUST, "worker", "-l", "info", "--web-port", env["METROBUS_WEB_PORT"]]
    done = subprocess.run(worker, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"metrobus: the broker at kafka://127.0.0.1:{too_new_broker} and aiokafka "), last
    assert "Produce (broker v9-13, aiokafka v0-7)" in last and "Fetch (broker v12-18, aiokafka v1-11)" in last, last
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
