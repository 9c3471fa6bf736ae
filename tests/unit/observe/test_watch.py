"""The cluster view built from workers' snapshots, and asking other workers where a message is."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from metrobus_app import Envelope, Settings, create_app
from metrobus_app.observe.cluster_view import STALE_AFTER_S
from metrobus_app.observe.fates import fate_lines
from metrobus_app.observe.stats import BusStats
from metrobus_app.wire.outcome import Outcome

from ..peer_server import serving


def record(stats: BusStats, stop: str, fate: str, detail: str = "", elapsed: float = 0.002, **kw) -> None:
    stats.record(Outcome(stop, fate, detail, received_at=time.time() - elapsed, elapsed=elapsed, **kw))


def test_the_cluster_view_adds_up_workers_and_gives_each_ones_share():
    app = create_app(Settings(app_id="unit-cluster", store="memory://"))
    watch = app.watch
    for _ in range(30):
        record(app.bus.stats, "AddEmail", "forwarded", "Log")
    other = BusStats()
    for _ in range(10):
        record(other, "AddEmail", "forwarded", "Log")
        record(other, "Log", "delivered")
    now = time.time()
    peer = {"worker": "b:1", "url": "http://b:6066/", "time": now - 1, **other.snapshot(now)}
    old = {"worker": "c:1", "url": "http://c:6066/", "time": now - STALE_AFTER_S - 5, **other.snapshot(now)}
    watch.take_snapshot(b"b:1", json.dumps(peer).encode())
    watch.take_snapshot(b"c:1", json.dumps(old).encode())
    watch.take_snapshot(watch.worker_id.encode(), json.dumps(peer).encode())  # its own: ignored
    view = watch.stats()
    assert view["stops"]["AddEmail"]["received"] == 30
    cluster = view["cluster"]
    assert cluster["stops"]["AddEmail"]["received"] == 50
    assert cluster["stops"]["AddEmail"]["forwarded_to"] == {"Log": 50}
    assert cluster["bus"]["delivered"] == 20
    workers = cluster["workers"]
    assert set(workers) == {watch.worker_id, "b:1", "c:1"}
    assert workers[watch.worker_id]["this"] and not workers[watch.worker_id]["stale"]
    assert workers[watch.worker_id]["stops"]["AddEmail"] == {"received": 30, "share": 0.6}
    assert workers["b:1"]["stops"]["AddEmail"] == {"received": 10, "share": 0.2}
    assert workers["b:1"]["share"] == round(20 / 70, 4)  # 20 of the 70 messages the three received
    assert not workers["b:1"]["stale"] and workers["c:1"]["stale"]
    # a record without a value forgets a worker
    watch.take_snapshot(b"c:1", None)
    assert "c:1" not in watch.stats()["cluster"]["workers"]


async def test_a_message_in_transit_here_is_looked_up_on_the_other_workers():
    app = create_app(Settings(app_id="unit-find", store="memory://"))
    watch = app.watch
    envelope = Envelope.stamp({"x": 1}, ["A", "B"])
    envelope.pop_next()
    envelope.add_hop("busdriver", time.time(), time.time(), watch.worker_id)
    watch.fates.record(Outcome("busdriver", "forwarded", "A", envelope=envelope, received_at=time.time()))
    assert (await watch.find(envelope.id))["status"] == "in_transit"  # no other worker yet

    asked = []

    async def answer(request: web.Request) -> web.Response:
        asked.append((request.match_info["id"], request.query.get("local")))
        if request.match_info["id"] != envelope.id:
            return web.json_response({"found": False}, status=404)
        return web.json_response({"id": envelope.id, "status": "delivered", "stop": "B", "time": time.time()})

    peer = web.Application()
    peer.router.add_get("/metrobus/messages/{id}", answer)
    async with serving(peer) as peer_url:
        now = time.time()
        for name, url, age in (("b:1", peer_url, 1), ("c:1", "http://127.0.0.1:9/", 1)):
            watch.take_snapshot(name.encode(), json.dumps({"url": url, "time": now - age}).encode())
        fate = await watch.find(envelope.id)
        assert fate["status"] == "delivered"
        assert asked == [(envelope.id, "1")]  # asked for its own record only; the dead peer did not hold it up
        assert await watch.find("nobody-knows") is None


async def test_fates_drained_by_the_watch_loop_are_sent_before_the_commit_hooks_publish_returns():
    app = create_app(Settings(app_id="unit-publish", store="memory://"))
    watch, sent = app.watch, []
    watch._declared = True
    for n in range(50):
        envelope = Envelope.stamp({"x": n}, ["A"])
        watch.fates.record(Outcome("A", "delivered", envelope=envelope, received_at=time.time()))

    async def slow_send(topic: str, key: bytes | None, value: bytes) -> None:
        await asyncio.sleep(0.001)  # as a send does while a full batch is handed over
        sent.extend(message_id for message_id, _ in fate_lines(key, value))

    real, app.bus.sender = app.bus.sender, slow_send
    try:
        loop_publish = asyncio.ensure_future(watch.publish_fates())  # the watch's loop drains all 50 (a record) ...
        await asyncio.sleep(0.002)
        await watch.publish_fates()  # ... and the commit hook's call waits for every one of them
        assert len(sent) == 50
        await loop_publish
        for n in range(3):
            watch.fates.record(
                Outcome("A", "dropped", envelope=Envelope.stamp({"y": n}, ["A"]), received_at=time.time())
            )
        cancelled = asyncio.ensure_future(watch.publish_fates())
        await asyncio.sleep(0)  # (the first fate's send has begun)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        await watch.publish_fates()  # the next call sends what the cancelled one had taken
        assert len(sent) == 53 and len(set(sent)) == 53
    finally:
        app.bus.sender = real


async def test_a_message_retrying_here_is_looked_up_on_the_other_workers_too():
    app = create_app(Settings(app_id="unit-find-retry", store="memory://"))
    watch = app.watch
    envelope = Envelope.stamp({"x": 1}, ["A"])
    message = "attempt 1 of 3 failed: TimeoutError: slow; next due at 2026-12-01T11:50:00Z"
    watch.fates.record(
        Outcome("A", "retrying", "metrobus-retry-5s", envelope=envelope, message=message, received_at=time.time())
    )
    assert watch.fates.get(envelope.id)["status"] == "retrying"

    async def answer(request: web.Request) -> web.Response:  # the worker it came back to delivered it
        return web.json_response({"id": envelope.id, "status": "delivered", "stop": "A", "time": 1.0})

    peer = web.Application()
    peer.router.add_get("/metrobus/messages/{id}", answer)
    async with serving(peer) as peer_url:
        watch.take_snapshot(b"b:1", json.dumps({"url": peer_url, "time": time.time()}).encode())
        assert (await watch.find(envelope.id))["status"] == "delivered"  # an end wins, however old
