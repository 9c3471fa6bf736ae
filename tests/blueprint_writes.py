"""The write views of metrobus's blueprints, found by walking them (so a new one cannot be missed)."""

from __future__ import annotations

from metrobus_app.web.routes import routes_blueprint
from metrobus_app.web.views import blueprint


def blueprint_writes() -> list[tuple[str, str]]:
    """(method, path template) of every write handler, e.g. ("PUT", "/metrobus/routes/{name}")."""
    found = []
    for bp in (blueprint, routes_blueprint):
        for route in bp.routes:
            for name in ("post", "put", "patch", "delete"):
                if name in vars(route.handler):
                    found.append((name.upper(), "/metrobus" + route.uri))
    return found
