"""Stops that only the routing tests run: ``METROBUS_MODULES=agents,tests.integration.extra_stops``.

None of them reads a cache, so a test needs no warm-up. ``Fraud`` shows a stop that changes
the route ahead: a large amount makes a detour through ``Review``.
"""

from metrobus_app import Route, stop


@stop("Tag")
def tag(payload: dict) -> dict:
    payload["tagged"] = True
    return payload


@stop("SinkA")
def sink_a(payload: dict) -> dict:
    return payload


@stop("SinkB")
def sink_b(payload: dict) -> dict:
    return payload


@stop("Fraud", route=True)
def fraud(payload: dict, route: Route) -> dict:
    if payload.get("amount", 0) > 100:
        route.detour("Review")
    return payload


@stop("Review")
def review(payload: dict) -> dict:
    payload["reviewed"] = True
    return payload
