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
