"""The web view of the route rules, ``/metrobus/routes/``, on every worker.

====== ============================ ===============================================================
GET    /metrobus/routes/            the rules in use: source (bus or file), revision, default, rules
PUT    /metrobus/routes/            replace the whole rule set: ``{"default": [...], "rules": [...]}``
DELETE /metrobus/routes/            forget the stored rules: every worker routes by the file again
POST   /metrobus/routes/            add a rule: ``{"name", "match", "route"[, "description"]}``;
                                    ``"position"`` (1 is first), ``"before"`` or ``"after"`` say where
GET    /metrobus/routes/NAME        one rule (``default``: the default route)
PUT    /metrobus/routes/NAME        add or replace that rule; ``default`` takes ``{"route": [...]}``
DELETE /metrobus/routes/NAME        remove that rule
====== ============================ ===============================================================

A write answers once this worker applies it (other workers within about a second) with
the rules in use, as GET does. An invalid change answers 400 (404 for a rule that is not
there, 409 for adding a name that is) with ``{"error": "..."}`` and changes nothing.
Every write goes through ``_write``; who may write is checked before any view runs, by the
web guard of ``security/web_guard.py`` (the admin token), which stands in front of every view of the worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faust import web

from metrobus_app.routing.language import DEFAULT, RuleError, RuleExists, RuleNotFound
from metrobus_app.routing.rule_set import RouteRules, RuleEditor

routes_blueprint = web.Blueprint("metrobus-routes")

Change = Callable[[RuleEditor, Any], Awaitable[int]]
PLACES = ("position", "before", "after")


def _rules(view: web.View) -> RouteRules | None:
    return RouteRules.of(view.app.bus)  # type: ignore[attr-defined]


async def _write(
    view: web.View, request: web.Request, change: Change, *, body: bool = True, created: bool = False
) -> web.Response:
    """Apply one change from a request: read its JSON body, change through the editor, answer."""
    rules = _rules(view)
    if rules is None:
        return view.notfound("this bus has no route rules")
    data: Any = None
    if body:
        try:
            data = await request.json()
        except ValueError as exc:
            return view.error(400, f"the body is not JSON: {exc}")
    try:
        await change(rules.editor(by="web"), data)
    except RuleNotFound as exc:
        return view.error(404, str(exc))
    except RuleExists as exc:
        return view.error(409, str(exc))
    except RuleError as exc:
        return view.error(400, str(exc))
    return view.json(rules.view(), status=201 if created else 200)


def _rule_and_place(data: Any, name: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(data, dict):
        raise RuleError('the body is a JSON object: {"name", "match", "route"}')
    rule = {k: v for k, v in data.items() if k not in PLACES}
    if name is not None and rule.setdefault("name", name) != name:
        raise RuleError(f"the body names rule {rule['name']!r}, the address {name!r}")
    return rule, {k: data[k] for k in PLACES if k in data}


def _check_place(place: dict[str, Any]) -> dict[str, Any]:
    position = place.get("position")
    if position is not None and (isinstance(position, bool) or not isinstance(position, int)):
        raise RuleError(f"position is a whole number (1 is first), got {position!r}")
    for key in ("before", "after"):
        if key in place and not isinstance(place[key], str):
            raise RuleError(f"{key} is the name of a rule, got {place[key]!r}")
    return place


@routes_blueprint.route("/routes/", name="routes")
class RoutesView(web.View):
    """The whole rule set."""

    async def get(self, request: web.Request) -> web.Response:
        rules = _rules(self)
        if rules is None:
            return self.notfound("this bus has no route rules")
        return self.json(rules.view())

    async def put(self, request: web.Request) -> web.Response:
        return await _write(self, request, lambda editor, data: editor.load(data))

    async def post(self, request: web.Request) -> web.Response:
        async def add(editor: RuleEditor, data: Any) -> int:
            rule, place = _rule_and_place(data)
            return await editor.put(rule, create=True, **_check_place(place))

        return await _write(self, request, add, created=True)

    async def delete(self, request: web.Request) -> web.Response:
        return await _write(self, request, lambda editor, data: editor.reset(), body=False)


@routes_blueprint.route("/routes/{name}", name="route-rule")
class RuleView(web.View):
    """One rule, or ``default``."""

    async def get(self, request: web.Request, name: str) -> web.Response:
        rules = _rules(self)
        if rules is None:
            return self.notfound("this bus has no route rules")
        view = rules.view()
        if name == DEFAULT and DEFAULT in view:
            return self.json({"name": DEFAULT, "route": view[DEFAULT]})
        for rule in view.get("rules", []):
            if rule["name"] == name:
                return self.json(rule)
        return self.notfound(f"no rule named {name!r}")

    async def put(self, request: web.Request, name: str) -> web.Response:
        async def put(editor: RuleEditor, data: Any) -> int:
            if name == DEFAULT:
                if not isinstance(data, dict) or set(data) != {"route"}:
                    raise RuleError('the default route takes {"route": ["Stop", ...]}')
                return await editor.set_default(data["route"])
            rule, place = _rule_and_place(data, name)
            return await editor.put(rule, **_check_place(place))

        return await _write(self, request, put)

    async def delete(self, request: web.Request, name: str) -> web.Response:
        return await _write(self, request, lambda editor, data: editor.remove(name), body=False)
