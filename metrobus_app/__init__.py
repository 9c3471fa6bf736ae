"""metrobus: smart routing on a dumb bus, on Faust.

``faust -A metrobus_app worker`` runs the default app, made when ``app``, ``bus``, ``stop``,
``busdriver`` or ``settings`` is first asked for (``application.default_app``): importing
this package or any of its modules builds nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metrobus_app.application import MetrobusApp, create_app
    from metrobus_app.config.settings import Settings
    from metrobus_app.core.bus import Bus
    from metrobus_app.core.retry import Backoff, Retry, exponential, fixed
    from metrobus_app.core.route import Route
    from metrobus_app.errors import ConfigError, Drop, Fault, InvalidEnvelope, MetrobusError, UnknownStop
    from metrobus_app.wire.compensation import remember
    from metrobus_app.wire.envelope import Envelope
    from metrobus_app.wire.outcome import Outcome

    app: MetrobusApp
    bus: Bus
    settings: Settings

_PUBLIC = {
    "Backoff": "metrobus_app.core.retry",
    "Bus": "metrobus_app.core.bus",
    "ConfigError": "metrobus_app.errors",
    "Drop": "metrobus_app.errors",
    "Envelope": "metrobus_app.wire.envelope",
    "Fault": "metrobus_app.errors",
    "InvalidEnvelope": "metrobus_app.errors",
    "MetrobusApp": "metrobus_app.application",
    "MetrobusError": "metrobus_app.errors",
    "Outcome": "metrobus_app.wire.outcome",
    "Retry": "metrobus_app.core.retry",
    "Route": "metrobus_app.core.route",
    "Settings": "metrobus_app.config.settings",
    "UnknownStop": "metrobus_app.errors",
    "create_app": "metrobus_app.application",
    "exponential": "metrobus_app.core.retry",
    "fixed": "metrobus_app.core.retry",
    "remember": "metrobus_app.wire.compensation",
}
_DEFAULT_APP = ("app", "bus", "busdriver", "settings", "stop")


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _DEFAULT_APP:
        from metrobus_app.application import default_app

        settings, app = default_app()
        globals().update(settings=settings, app=app, bus=app.bus, stop=app.bus.stop, busdriver=app.bus.busdriver)
        value = globals()[name]
    else:
        raise AttributeError(f"module 'metrobus_app' has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "Backoff",
    "Bus",
    "ConfigError",
    "Drop",
    "Envelope",
    "Fault",
    "InvalidEnvelope",
    "MetrobusApp",
    "MetrobusError",
    "Outcome",
    "Retry",
    "Route",
    "Settings",
    "UnknownStop",
    "app",
    "bus",
    "busdriver",
    "create_app",
    "exponential",
    "fixed",
    "remember",
    "settings",
    "stop",
]
