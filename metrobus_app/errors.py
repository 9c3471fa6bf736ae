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


class Fault(MetrobusError):
    """Raise in a stop to fail the message for good, on purpose: never retried.

    The stops already done are compensated, newest first, and the message is dead-lettered
    with the reason: ``raise Fault("card declined")``.
    """

    def __init__(self, reason: str = "fault") -> None:
        super().__init__(reason)
        self.reason = reason


class DeadlinePassed(MetrobusError):
    """A message reached a stop after its deadline (``header.deadline``): it is not run there, it expired."""


class CompensationFailed(MetrobusError):
    """A stop's compensation failed after its retries; the stops named were not undone."""


class InvalidPayload(MetrobusError):
    """A payload does not validate against its stop's type; the message names each field and what is wrong.

    It is dead-lettered at that stop (never retried), counted by stop and field.
    """

    def __init__(self, stop: str, type_name: str, problems: list[dict[str, str]]) -> None:
        said = "; ".join(f"{problem['field']}: {problem['problem']}" for problem in problems)
        super().__init__(f"{stop}'s payload is not a valid {type_name}: {said}")
        self.problems = problems
        fields = ",".join(dict.fromkeys(problem["field"] for problem in problems))
        self.detail = f"InvalidPayload({fields})"  # the dead letters are counted by stop and field


class RouteRefused(MetrobusError):
    """A route cannot work by its stops' payload types: a stop needs a field the stop before it does not give."""
