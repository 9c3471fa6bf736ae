"""metrobus: smart routing on a dumb bus, on Faust.

``faust -A metrobus_app worker`` runs the app below with the stops it discovers in
``METROBUS_MODULES`` (default: the ``agents`` package).
"""

from .accounting_commands import register_accounting_commands
from .app import MetrobusApp, create_app, install_event_loop
from .bus import Bus, Outcome
from .commands import register_commands
from .envelope import Envelope
from .errors import ConfigError, Drop, InvalidEnvelope, MetrobusError, UnknownStop
from .route import Route
from .settings import Settings
from .web import blueprint

try:
    settings = Settings.from_env()
    install_event_loop(settings)
except ConfigError as exc:
    raise SystemExit(f"metrobus: {exc}") from None
app = create_app(settings, autodiscover=settings.modules)
bus = app.bus
stop = bus.stop
busdriver = bus.busdriver

register_commands(app)
register_accounting_commands(app)
blueprint.register(app, url_prefix="/metrobus/")

__all__ = [
    "Bus",
    "ConfigError",
    "Drop",
    "Envelope",
    "InvalidEnvelope",
    "MetrobusApp",
    "MetrobusError",
    "Outcome",
    "Route",
    "Settings",
    "UnknownStop",
    "app",
    "bus",
    "busdriver",
    "create_app",
    "settings",
    "stop",
]
