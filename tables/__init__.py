"""The lookup caches of the demo bus and how they are filled."""

from . import commands  # noqa: F401  (registers the make-data and warm commands)
from .caches import emails, whitelist

__all__ = ["emails", "whitelist"]
