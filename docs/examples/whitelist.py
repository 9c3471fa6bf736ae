from metrobus_app import Drop, stop
from tables import whitelist


@stop("WhiteList")
def check_whitelist(payload: dict) -> dict:
    if payload.get("email") not in whitelist:
        raise Drop("email not whitelisted")
    payload["whitelist"] = True
    return payload
