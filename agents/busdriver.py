"""The busdriver: the one smart stop, it reads each raw record once and stamps its route."""

from metrobus_app import busdriver

DEFAULT_ROUTE = ["AddEmail", "WhiteList", "Log"]
ROUTES = {
    # An audit record needs the contact point but goes to everyone, whitelisted or not.
    "AUDIT": ["AddEmail", "Log"],
}


@busdriver()
def route(record: dict) -> list[str]:
    """Choose the route by the record's message_type_code."""
    return ROUTES.get(record.get("message_type_code"), DEFAULT_ROUTE)
