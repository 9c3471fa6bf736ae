"""Web views of the bus on the worker's own Faust web server, as a blueprint (at ``/metrobus/``)."""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from faust import web

from metrobus_app.observe.fates import where
from metrobus_app.observe.metrics import CONTENT_TYPE, exposition
from metrobus_app.routing.asyncapi import asyncapi_document

LOOKUP_WAIT_S = 5.0

blueprint = web.Blueprint("metrobus")
DASHBOARD = resources.files(__package__).joinpath("dashboard.html").read_text(encoding="utf-8")


def _bus(view: web.View) -> Any:
    return view.app.bus  # type: ignore[attr-defined]


def _watch(view: web.View) -> Any:
    return view.app.watch  # type: ignore[attr-defined]


@blueprint.route("/", name="dashboard")
class DashboardView(web.View):
    """The dashboard: a static page that reads the JSON views every 2 s."""

    async def get(self, request: web.Request) -> web.Response:
        return self.html(DASHBOARD, headers={"Cache-Control": "no-cache"})


@blueprint.route("/stats/", name="stats")
class StatsView(web.View):
    """What each stop of this worker did (``stops``, ``bus``), and of the whole ``cluster``.

    Per stop: received, forwarded (by next stop), delivered, dropped (by reason),
    dead-lettered (by error), the rate over the last minute and the processing time per
    message (p50, p99); for the bus: end-to-end latency; the latest dead letters.
    """

    async def get(self, request: web.Request) -> web.Response:
        return self.json(_watch(self).stats())


@blueprint.route("/messages/{message_id}", name="message")
class MessageView(web.View):
    """Where a message is now, or where it ended and why, with its hops (``?local=1``: this worker only)."""

    async def get(self, request: web.Request, message_id: str) -> web.Response:
        watch = _watch(self)
        local = request.query.get("local") == "1"
        fate = watch.fates.get(message_id) if local else await watch.find(message_id)
        if fate is None:
            kept = f"{watch.fates.max_count} messages for {watch.fates.ttl_s} s"
            return self.json(
                {"id": message_id, "found": False, "status": "unknown", "where": f"not known here (kept: {kept})"},
                status=404,
            )
        return self.json({**with_trace_ids(fate), "found": True, "where": where(fate)})


def trace_id(hops: Any) -> str | None:
    """The trace id the hops name (tracing on: ``trace_id`` in each hop a traced stop sent on), or None.

    The latest hop that names one: a hop by a 0.0.x stop in between, or by a worker with
    tracing off, has none and is passed over.
    """
    if not isinstance(hops, list):
        return None
    for hop in reversed(hops):
        found = hop.get("trace_id") if isinstance(hop, dict) else None
        if isinstance(found, str) and found:
            return found
    return None


def with_trace_ids(fate: dict[str, Any]) -> dict[str, Any]:
    """The fate with a top-level ``trace_id`` when the message was traced, and one in each copy of a fan-out.

    The message's own from its hops, else from its copies' (they continue its trace); each
    copy has its own entry from its own hops. Nothing is added for a message not traced.
    """
    copies = fate.get("copies")
    if isinstance(copies, list):
        copies = [
            {**copy, "trace_id": found} if isinstance(copy, dict) and (found := trace_id(copy.get("hops"))) else copy
            for copy in copies
        ]
        fate = {**fate, "copies": copies}
    found = trace_id(fate.get("hops"))
    if found is None and isinstance(copies, list):
        found = next((copy["trace_id"] for copy in copies if isinstance(copy, dict) and copy.get("trace_id")), None)
    return {**fate, "trace_id": found} if found else fate


@blueprint.route("/metrics", name="metrics")
class MetricsView(web.View):
    """Prometheus metrics of this worker, per stop (text exposition format)."""

    async def get(self, request: web.Request) -> web.Response:
        return self.bytes(exposition(_watch(self).metrics), headers={"Content-Type": CONTENT_TYPE})


@blueprint.route("/caches/", name="caches")
class CachesView(web.View):
    """How many entries each lookup cache holds in this worker, and whether it has caught up."""

    async def get(self, request: web.Request) -> web.Response:
        caches = _bus(self).caches.items()
        return self.json({name: {"entries": len(cache), "ready": cache.ready.is_set()} for name, cache in caches})


@blueprint.route("/caches/{name}/{key}", name="cache-lookup")
class CacheLookupView(web.View):
    """One lookup: ``/metrobus/caches/whitelist/someone@example.com``.

    While the cache is still loading in this worker (just after it started), the lookup
    waits up to ``LOOKUP_WAIT_S`` for it, then answers 503: a partial answer would mislead.
    """

    async def get(self, request: web.Request, name: str, key: str) -> web.Response:
        cache = _bus(self).caches.get(name)
        if cache is None:
            return self.notfound(f"no cache named {name!r}")
        try:
            await asyncio.wait_for(cache.ready.wait(), LOOKUP_WAIT_S)
        except TimeoutError:
            return self.error(503, f"cache {name!r} is still loading in this worker; ask again in a moment")
        value = cache.get(key)
        return self.json({"cache": name, "key": key, "found": value is not None, "value": value})


@blueprint.route("/asyncapi.json", name="asyncapi")
class AsyncAPIView(web.View):
    """The bus as an AsyncAPI 3.0.0 document: topics, messages, the routes this worker uses (routing/asyncapi.py)."""

    async def get(self, request: web.Request) -> web.Response:
        return self.json(asyncapi_document(_bus(self)))
