"""Exceptions of metrobus: one root, each named for what it makes the bus do."""

from __future__ import annotations


class MetrobusError(Exception):
    """Root of every metrobus exception."""


class ConfigError(MetrobusError):
    """A ``METROBUS_*`` setting or a command option has a value the bus cannot use."""


class Drop(MetrobusError):
    """Raise in a stop to drop the message on purpose; the reason is counted and logged.

    ``raise Drop("no email for account")`` is the same as returning None, with a name.
    """

    def __init__(self, reason: str = "dropped") -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidEnvelope(MetrobusError):
    """A value on a stop's topic is not a metrobus envelope; it goes to the dead-letter topic."""


class UnknownStop(MetrobusError):
    """A route names a stop that is neither one of this bus's stops nor a configured external one."""
