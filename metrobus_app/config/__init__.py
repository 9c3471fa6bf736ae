"""Settings: every knob, read once from ``METROBUS_*`` environment variables, and the checks of their values."""

from metrobus_app.config.settings import Settings

__all__ = ["Settings"]
