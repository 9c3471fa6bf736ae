"""Loop and runaway protection: the limits a message's header must keep, checked by ``Bus`` on each message.

Each check is a few dict lookups and ``len`` calls.
"""

from __future__ import annotations

from typing import Any

from metrobus_app.config import Settings
from metrobus_app.errors import InvalidEnvelope, MetrobusError
from metrobus_app.wire.envelope import HISTORICAL_ROUTE, MAX_HOPS, REPLAYS, ROUTE, Envelope


class HopLimitExceeded(MetrobusError):
    """A message was sent on more often than its hop limit allows: a loop, or a runaway route."""


class StopResultInvalid(MetrobusError):
    """A stop returned a payload that cannot go on the wire (not JSON-encodable)."""


def check_envelope(envelope: Envelope, settings: Settings) -> None:
    """Raise InvalidEnvelope when the header breaks a limit or has a field of the wrong type."""
    header = envelope.header
    limit = settings.max_route_stops
    if len(header[ROUTE]) > limit or len(header[HISTORICAL_ROUTE]) > limit:
        for name in (ROUTE, HISTORICAL_ROUTE):
            if len(header[name]) > limit:
                raise InvalidEnvelope(
                    f"header.{name} has {len(header[name])} stops, above METROBUS_MAX_ROUTE_STOPS={limit}"
                )
    message_id = header.get("id")
    if message_id is not None and not isinstance(message_id, str):
        raise InvalidEnvelope(f"header.id is a {type(message_id).__name__}, not a string")
    if MAX_HOPS in header or REPLAYS in header:
        for name, least in ((MAX_HOPS, 1), (REPLAYS, 0)):
            value = header.get(name)
            if value is not None and (type(value) is not int or value < least):
                raise InvalidEnvelope(f"header.{name} is {value!r}, not a whole number >= {least}")
    hops = header.get("hops")
    if hops is not None and not isinstance(hops, list):
        raise InvalidEnvelope(f"header.hops is a {type(hops).__name__}, not a list")


def check_route(stops: Any, settings: Settings) -> None:
    """What a busdriver returned must be a list of stop names within the route limit."""
    if len(stops) > settings.max_route_stops:
        raise InvalidEnvelope(
            f"the busdriver's route has {len(stops)} stops, above METROBUS_MAX_ROUTE_STOPS={settings.max_route_stops}"
        )


def check_hops(envelope: Envelope, settings: Settings) -> None:
    """Raise HopLimitExceeded when sending the envelope on would pass its hop limit."""
    limit = envelope.header.get(MAX_HOPS) or settings.max_hops
    made = len(envelope.header[HISTORICAL_ROUTE])
    if made >= limit:
        where = "header.max_hops" if envelope.header.get(MAX_HOPS) else "METROBUS_MAX_HOPS"
        raise HopLimitExceeded(f"the message was sent to {made} stops; its limit is {limit} ({where})")
