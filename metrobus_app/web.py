"""Web views of the bus on the worker's own Faust web server, as a blueprint."""

from __future__ import annotations

from typing import Any

from faust import web

blueprint = web.Blueprint("metrobus")


def _bus(view: web.View) -> Any:
    return view.app.bus  # type: ignore[attr-defined]


@blueprint.route("/stats/", name="stats")
class StatsView(web.View):
    """What each stop of this worker did: received, forwarded, delivered, dropped, dead-lettered."""

    async def get(self, request: web.Request) -> web.Response:
        bus = _bus(self)
        return self.json({"worker": self.app.conf.canonical_url.human_repr(), "stops": bus.stats.as_dict()})


@blueprint.route("/caches/", name="caches")
class CachesView(web.View):
    """How many entries each lookup cache holds in this worker, and whether it has caught up."""

    async def get(self, request: web.Request) -> web.Response:
        caches = _bus(self).caches.items()
        return self.json({name: {"entries": len(cache), "ready": cache.ready.is_set()} for name, cache in caches})


@blueprint.route("/caches/{name}/{key}", name="cache-lookup")
class CacheLookupView(web.View):
    """One lookup: ``/metrobus/caches/whitelist/someone@example.com``."""

    async def get(self, request: web.Request, name: str, key: str) -> web.Response:
        cache = _bus(self).caches.get(name)
        if cache is None:
            return self.notfound(f"no cache named {name!r}")
        value = cache.get(key)
        return self.json({"cache": name, "key": key, "found": value is not None, "value": value})
