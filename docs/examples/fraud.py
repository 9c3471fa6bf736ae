from metrobus_app import Route, stop


@stop("Fraud", route=True)
def check(payload: dict, route: Route) -> dict:
    if payload["amount"] > 10_000:
        route.detour("ManualReview")  # next, then on along the route
    return payload
