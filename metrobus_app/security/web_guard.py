"""Who may use the worker's web server: one guard in front of every view.

``WebGuard.middleware`` is an aiohttp middleware of the worker's web application (passed
through Faust's ``web_application_options``), so it runs before *every* view: metrobus's
blueprints, Faust's own views and any view added later. No view can forget it.

- A request that may change state (any method but GET, HEAD and OPTIONS) needs
  ``Authorization: Bearer <token>``, the token of ``METROBUS_ADMIN_TOKEN`` or of the file named
  by ``METROBUS_ADMIN_TOKEN_FILE``, compared in constant time (``hmac.compare_digest``). No
  header: 401; a wrong token: 403; the attempt is logged (method, path, address), never the
  token. Without a configured token write actions are disabled: 403 saying how to enable them.
  Its body may be at most ``METROBUS_WEB_MAX_BODY_BYTES`` (413 otherwise).
- ``METROBUS_WEB_AUTH=all`` asks the same of every read too, except the dashboard page itself
  (static HTML without data; it asks for the token and sends it on the views it reads).
- A path without the trailing slash of its view (``/metrobus/stats``) is redirected (308, method and
  query kept) to the view (``/metrobus/stats/``) by ``append_slash``, which runs after the guard:
  a redirect is answered only to whom the guard lets through, so it neither bypasses it nor shows
  more than a 404 would.

Every answer of the guard is JSON ``{"error": "..."}``; it never echoes the request.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web as aioweb
from aiohttp.web_middlewares import normalize_path_middleware

from metrobus_app.config.checks import ENABLE, admin_token, check_web_auth

if TYPE_CHECKING:
    from metrobus_app.config.settings import Settings

log = logging.getLogger("metrobus.auth")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Pages anyone who reaches the port may load, whatever METROBUS_WEB_AUTH says: static, no data.
PUBLIC_PAGES = frozenset({"/metrobus/", "/metrobus"})  # the second: only a redirect to the first
Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]
#: A request no route matches, whose path with a trailing slash does: 308 to that path (aiohttp's own).
append_slash = normalize_path_middleware(append_slash=True, merge_slashes=False)


def refusal(token: str | None, authorization: str | None) -> tuple[int, str] | None:
    """None when ``authorization`` (the header's value) carries ``token``; else (status, why)."""
    if token is None:
        return 403, f"write actions are disabled on this worker: no admin token is configured; to enable them, {ENABLE}"
    if not authorization:
        return 401, "this needs the admin token: send the header 'Authorization: Bearer <token>'"
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return 401, "the Authorization header is not 'Bearer <token>'"
    if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode("utf-8")):
        return 403, "wrong admin token"
    return None


@dataclass(frozen=True)
class WebGuard:
    """The worker's web access policy, and the middleware that enforces it."""

    token: str | None
    mode: str = "writes"
    max_body_bytes: int = 65_536

    @classmethod
    def from_settings(cls, settings: Settings) -> WebGuard:
        check_web_auth(settings)
        return cls(admin_token(settings), settings.web_auth, settings.web_max_body_bytes)

    def __repr__(self) -> str:  # never the token
        return f"WebGuard(token={'***' if self.token else None}, mode={self.mode!r})"

    def application_options(self) -> dict[str, Any]:
        """Faust's ``web_application_options``: this middleware then ``append_slash``, and aiohttp's body limit."""
        return {"middlewares": [self.middleware, append_slash], "client_max_size": self.max_body_bytes}

    def protects(self, method: str, path: str) -> bool:
        """Whether a request needs the token: every write; every read too under ``all``, but the public pages."""
        if method.upper() not in READ_METHODS:
            return True
        return self.mode == "all" and method.upper() != "OPTIONS" and path not in PUBLIC_PAGES

    def peer_headers(self) -> dict[str, str]:
        """Headers for this worker's requests to its peers' views (needed only when reads are protected)."""
        return {"Authorization": f"Bearer {self.token}"} if self.mode == "all" and self.token else {}

    def describe(self) -> str:
        """One line for the log at start (never the token)."""
        if self.token is None:
            return f"web: write actions are DISABLED (no admin token configured); to enable them, {ENABLE}"
        reads = "every view but the dashboard page needs" if self.mode == "all" else "reads are open, writes need"
        return f"web: {reads} the admin token (METROBUS_WEB_AUTH={self.mode})"

    async def announce(self) -> None:
        """A worker task: say at start what the web server asks of whom."""
        (log.warning if self.token is None else log.info)("%s", self.describe())

    @aioweb.middleware
    async def middleware(self, request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        try:
            return await self._guard(request, handler)
        except aioweb.HTTPException as exc:  # aiohttp's own 404, 405, ...: JSON too, never the request echoed
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason)

    async def _guard(self, request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        if not self.protects(request.method, request.path):
            return await handler(request)
        refused = refusal(self.token, _header(request))
        if refused is not None:
            status, why = refused
            log.warning("refused %s %r from %s: %s", request.method, request.path, request.remote, why.split(";")[0])
            headers = {"WWW-Authenticate": 'Bearer realm="metrobus"'} if status == 401 else None
            return _error(status, why, headers)
        if request.method not in READ_METHODS:
            too_big = _error(413, f"the request body is larger than {self.max_body_bytes} bytes")
            if request.content_length is not None and request.content_length > self.max_body_bytes:
                return too_big
            try:
                await request.read()  # kept by aiohttp for the view's request.json()
            except aioweb.HTTPRequestEntityTooLarge:
                return too_big
        return await handler(request)


def _header(request: aioweb.Request) -> str | None:
    return request.headers.get("Authorization")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> aioweb.Response:
    return aioweb.json_response({"error": message}, status=status, headers=headers)
