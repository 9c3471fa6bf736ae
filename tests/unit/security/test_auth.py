"""The web guard (metrobus_app/security/web_guard.py): the token, what it protects, and how it answers."""

from __future__ import annotations

import json

import pytest
from aiohttp import web as aioweb
from aiohttp.test_utils import TestClient, TestServer

import metrobus_app.security.web_guard as web_guard
from metrobus_app import ConfigError, Settings, app
from metrobus_app.config.checks import admin_token, check_web_auth
from metrobus_app.security.web_guard import WebGuard, refusal

from ...blueprint_writes import blueprint_writes
from ..peer_server import serving

TOKEN = "s3cret-admin-token-0123456789"


def test_refusal_answers_401_without_a_header_403_for_a_wrong_token_and_none_for_the_right_one():
    assert refusal(TOKEN, None)[0] == 401
    assert refusal(TOKEN, "")[0] == 401
    assert refusal(TOKEN, f"Basic {TOKEN}")[0] == 401
    assert refusal(TOKEN, "Bearer ")[0] == 401
    assert refusal(TOKEN, "Bearer nope") == (403, "wrong admin token")
    assert refusal(TOKEN, f"Bearer {TOKEN}x")[0] == 403
    assert refusal(TOKEN, f"Bearer {TOKEN}") is None
    assert refusal(TOKEN, f"bearer  {TOKEN} ") is None
    assert refusal(TOKEN, "Bearer tøken")[0] == 403  # not ASCII: still a plain refusal, no error


def test_the_token_is_compared_in_constant_time(monkeypatch):
    calls = []

    def compare(a, b):
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(web_guard.hmac, "compare_digest", compare)
    assert refusal(TOKEN, f"Bearer {TOKEN}") is None
    assert refusal(TOKEN, "Bearer wrong")[0] == 403
    assert calls == [(TOKEN.encode(), TOKEN.encode()), (b"wrong", TOKEN.encode())]


def test_no_token_disables_writes_and_says_how_to_enable_them():
    status, why = refusal(None, f"Bearer {TOKEN}")
    assert status == 403 and "disabled" in why and "METROBUS_ADMIN_TOKEN" in why
    guard = WebGuard.from_settings(Settings())
    assert guard.token is None and "DISABLED" in guard.describe()


def test_the_token_comes_from_the_variable_or_a_file(tmp_path):
    assert admin_token(Settings()) is None
    assert admin_token(Settings(admin_token=TOKEN)) == TOKEN
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    assert admin_token(Settings(admin_token_file=str(path))) == TOKEN
    settings = Settings.from_env({"METROBUS_ADMIN_TOKEN_FILE": str(path), "METROBUS_WEB_AUTH": "all"})
    assert WebGuard.from_settings(settings).token == TOKEN


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"METROBUS_ADMIN_TOKEN": TOKEN, "METROBUS_ADMIN_TOKEN_FILE": "/x"}, "not both"),
        ({"METROBUS_ADMIN_TOKEN_FILE": "/no/such/file"}, "cannot be read"),
        ({"METROBUS_ADMIN_TOKEN": "short"}, "at least 16"),
        ({"METROBUS_ADMIN_TOKEN": "with a space in it, long enough"}, "without spaces"),
        ({"METROBUS_WEB_AUTH": "all"}, "needs an admin token"),
        ({"METROBUS_WEB_AUTH": "reads", "METROBUS_ADMIN_TOKEN": TOKEN}, "not one of writes, all"),
    ],
)
def test_unusable_web_settings_stop_the_worker_with_one_line_without_the_token(env, complaint):
    with pytest.raises(ConfigError, match=complaint) as caught:
        Settings.from_env(env)
    for value in env.values():
        if value not in ("all", "reads", "/x", "/no/such/file"):  # a token, never in the message
            assert value not in str(caught.value)


def test_an_empty_token_file_is_refused(tmp_path):
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        check_web_auth(Settings(admin_token_file=str(tmp_path / "token")))


def test_the_token_is_never_shown():
    settings = Settings(admin_token=TOKEN, redis_url="redis://:hunter22@redis:6379/0")
    assert TOKEN not in repr(settings) and TOKEN not in repr(WebGuard(TOKEN))
    shown = dict((env, value) for env, value, *_ in settings.describe())
    assert shown["METROBUS_ADMIN_TOKEN"] == "***"
    assert shown["METROBUS_REDIS_URL"] == "redis://:***@redis:6379/0"


def test_what_is_protected():
    writes, everything = WebGuard(TOKEN), WebGuard(TOKEN, "all")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert writes.protects(method, "/metrobus/routes/") and everything.protects(method, "/anything")
    assert not writes.protects("GET", "/metrobus/stats/") and not writes.protects("HEAD", "/metrobus/stats/")
    assert everything.protects("GET", "/metrobus/stats/") and everything.protects("GET", "/router/")
    assert not everything.protects("GET", "/metrobus/")  # the static dashboard page: it asks for the token
    assert writes.peer_headers() == {} and everything.peer_headers() == {"Authorization": f"Bearer {TOKEN}"}


def test_the_app_puts_the_guard_in_front_of_its_whole_web_server():
    options = app.conf.web_application_options
    assert options["middlewares"] == [app.web_guard.middleware, web_guard.append_slash]  # the guard first
    assert options["client_max_size"] == app.settings.web_max_body_bytes
    assert app.web_guard.middleware in app.web.web_app.middlewares  # Faust's aiohttp application itself


async def _client(guard: WebGuard, routes: list[tuple[str, str]]) -> TestClient:
    async def ok(request: aioweb.Request) -> aioweb.Response:
        body = await request.read()
        return aioweb.json_response({"ok": True, "bytes": len(body)})

    web_app = aioweb.Application(**guard.application_options())
    for method, path in routes:
        web_app.router.add_route(method, path, ok)
    client = TestClient(TestServer(web_app))
    await client.start_server()
    return client


async def test_every_write_handler_of_every_blueprint_is_behind_the_guard():
    writes = blueprint_writes()
    assert len(writes) == 5, writes  # PUT/POST/DELETE /routes/, PUT/DELETE /routes/{name}
    reads = [("GET", "/metrobus/stats/"), ("GET", "/metrobus/")]
    client = await _client(WebGuard(TOKEN, max_body_bytes=100), writes + reads)
    try:
        for method, path in writes:
            path = path.replace("{name}", "audit")
            response = await client.request(method, path)
            assert response.status == 401 and "Bearer" in (await response.json())["error"], (method, path)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            response = await client.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert response.status == 403 and await response.json() == {"error": "wrong admin token"}
            response = await client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"}, data=b"{}")
            assert response.status == 200, (method, path)
        assert (await client.get("/metrobus/stats/")).status == 200
        big = await client.put("/metrobus/routes/", headers={"Authorization": f"Bearer {TOKEN}"}, data=b"x" * 101)
        assert big.status == 413 and "100 bytes" in (await big.json())["error"]

        async def chunks():
            for _ in range(5):
                yield b"x" * 40

        chunked = await client.put("/metrobus/routes/", headers={"Authorization": f"Bearer {TOKEN}"}, data=chunks())
        assert chunked.status == 413  # no Content-Length: counted while read
        missing = await client.get("/metrobus/<b>nothing</b>")
        assert missing.status == 404 and json.loads(await missing.text()) == {"error": "Not Found"}
    finally:
        await client.close()


async def test_web_auth_all_protects_reads_but_the_dashboard_page():
    client = await _client(WebGuard(TOKEN, "all"), [("GET", "/metrobus/stats/"), ("GET", "/metrobus/")])
    try:
        assert (await client.get("/metrobus/stats/")).status == 401
        assert (await client.get("/metrobus/stats/", headers={"Authorization": "Bearer x"})).status == 403
        assert (await client.get("/metrobus/stats/", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200
        assert (await client.get("/metrobus/")).status == 200
    finally:
        await client.close()


async def test_a_path_without_its_trailing_slash_is_redirected_only_past_the_guard():
    routes = [("GET", "/metrobus/stats/"), ("GET", "/metrobus/"), ("PUT", "/metrobus/routes/")]
    client = await _client(WebGuard(TOKEN, "all"), routes)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    try:
        refused = await client.get("/metrobus/stats?x=1", allow_redirects=False)
        assert refused.status == 401 and "Location" not in refused.headers  # no token, no redirect
        assert (await client.get("/metrobus/stats", headers={"Authorization": "Bearer x"})).status == 403
        moved = await client.get("/metrobus/stats?x=1", headers=admin, allow_redirects=False)
        assert moved.status == 308 and moved.headers["Location"] == "/metrobus/stats/?x=1"
        dashboard = await client.get("/metrobus", allow_redirects=False)  # the public page: redirected for anyone
        assert dashboard.status == 308 and dashboard.headers["Location"] == "/metrobus/"
        write = await client.put("/metrobus/routes", allow_redirects=False)
        assert write.status == 401  # a write is checked before it is redirected
        write = await client.put("/metrobus/routes", headers=admin, allow_redirects=False)
        assert write.status == 308 and write.headers["Location"] == "/metrobus/routes/"  # 308: the method is kept
        missing = await client.get("/metrobus/nothing", headers=admin)
        assert missing.status == 404 and await missing.json() == {"error": "Not Found"}
    finally:
        await client.close()


async def test_writes_are_disabled_without_a_token():
    client = await _client(WebGuard(None), [("PUT", "/metrobus/routes/"), ("GET", "/metrobus/routes/")])
    try:
        response = await client.put("/metrobus/routes/", headers={"Authorization": f"Bearer {TOKEN}"}, data=b"{}")
        assert response.status == 403 and "METROBUS_ADMIN_TOKEN" in (await response.json())["error"]
        assert (await client.get("/metrobus/routes/")).status == 200
    finally:
        await client.close()


async def test_under_web_auth_all_a_worker_sends_the_token_when_it_asks_its_peers():
    import time

    from metrobus_app import create_app

    worker = create_app(Settings(app_id="unit-auth-peers", store="memory://", admin_token=TOKEN, web_auth="all"))
    asked = []

    async def answer(request: aioweb.Request) -> aioweb.Response:
        asked.append(request.match_info["id"])
        return aioweb.json_response({"id": "m1", "status": "delivered", "stop": "Log", "time": time.time()})

    peer = aioweb.Application(**WebGuard(TOKEN, "all").application_options())  # a peer that wants the token
    peer.router.add_get("/metrobus/messages/{id}", answer)
    async with serving(peer) as url:
        snapshot = {"url": url, "time": time.time()}
        worker.watch.take_snapshot(b"b:1", json.dumps(snapshot).encode())
        assert (await worker.watch.find("m1"))["status"] == "delivered"
        assert asked == ["m1"]
