"""The bus's own web views, called as Faust calls them."""

from __future__ import annotations

import json
from pathlib import Path

from metrobus_app import bus
from metrobus_app.web import views
from metrobus_app.web.views import CacheLookupView


async def test_a_lookup_in_a_cache_still_loading_waits_then_says_503(test_app, monkeypatch, tmp_path: Path):
    monkeypatch.setattr(views, "LOOKUP_WAIT_S", 0.05)
    view = CacheLookupView(test_app, test_app.web)
    cache = bus.caches["emails"]
    assert not cache.ready.is_set()  # Faust's test mode never loads it
    answer = await view.get(None, "emails", "1")
    assert answer.status == 503 and "still loading" in json.loads(answer.body)["error"]

    store = cache.open("memory://", tmp_path)
    store.apply([(b"1", b"one@example.com")], offset=0)  # what the cache's changelog reader does
    cache.ready.set()
    try:
        answer = await view.get(None, "emails", "1")
        assert answer.status == 200
        assert json.loads(answer.body) == {"cache": "emails", "key": "1", "found": True, "value": "one@example.com"}
    finally:
        cache.ready.clear()
        cache.close()


async def test_every_view_that_ends_in_a_slash_answers_without_it_with_a_redirect(test_app):
    from aiohttp.test_utils import TestClient, TestServer

    from metrobus_app.web.routes import routes_blueprint

    every = {"/metrobus" + route.uri for bp in (views.blueprint, routes_blueprint) for route in bp.routes}
    slashed = sorted(path for path in every if path.endswith("/"))
    assert {"/metrobus/", "/metrobus/stats/", "/metrobus/caches/", "/metrobus/routes/"} <= set(slashed)
    client = TestClient(TestServer(test_app.web.web_app))  # Faust's own aiohttp application, with its middlewares
    await client.start_server()
    try:
        for path in slashed:
            moved = await client.get(path.rstrip("/") + "?local=1", allow_redirects=False)
            assert moved.status == 308, path
            assert moved.headers["Location"] == path + "?local=1"
            followed = await client.get(path.rstrip("/"))
            assert followed.status == 200 and followed.url.path == path
        assert (await client.get("/metrobus/nothing", allow_redirects=False)).status == 404
        assert (await client.get("/metrobus/caches/emails", allow_redirects=False)).status == 404  # no such view
    finally:
        await client.close()
