"""Retry policies of stops: which failures are passing, how many attempts, and how long to wait between them."""

from __future__ import annotations

import random
from dataclasses import dataclass

from metrobus_app.errors import Drop, Fault, InvalidPayload


@dataclass(frozen=True, slots=True)
class Backoff:
    """The wait before retry ``n`` (1 is the first retry): ``initial_s * factor ** (n - 1)``, at most ``max_s``.

    ``factor=1`` waits the same each time. ``jitter`` spreads each wait over
    ``[wait * (1 - jitter), wait]``, so messages that failed together do not all come back
    at the same moment; the cap holds with jitter too.
    """

    initial_s: float = 0.1
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.max_s < 0:
            raise ValueError(f"a backoff waits 0 s or more, got initial_s={self.initial_s}, max_s={self.max_s}")
        if self.factor < 1:
            raise ValueError(f"a backoff's factor is 1 (fixed) or more (exponential), got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"a backoff's jitter is a share between 0 and 1, got {self.jitter}")

    def wait_s(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 is the first)."""
        if retry < 1:
            raise ValueError(f"retries count from 1, got {retry}")
        wait = min(self.initial_s * self.factor ** min(retry - 1, 1_000), self.max_s)
        if self.jitter:
            wait *= 1 - self.jitter * (rng or random).random()
        return wait


def fixed(wait_s: float, *, jitter: float = 0.0) -> Backoff:
    """The same wait before every retry."""
    return Backoff(initial_s=wait_s, factor=1.0, max_s=wait_s, jitter=jitter)


def exponential(initial_s: float, *, factor: float = 2.0, max_s: float = 30.0, jitter: float = 0.2) -> Backoff:
    """A wait that grows ``factor`` times with each retry, up to ``max_s``."""
    return Backoff(initial_s=initial_s, factor=factor, max_s=max_s, jitter=jitter)


@dataclass(frozen=True, slots=True)
class Retry:
    """A stop's retry policy: ``@stop("AddEmail", retry=Retry(attempts=5, on=(TimeoutError,)))``.

    ``attempts`` counts every try, the first included, at this stop (the count starts again
    at the next stop). Only the exceptions of ``on`` (and their subclasses) are passing and
    retried; any other is final at once. ``Drop``, ``Fault`` and ``InvalidPayload`` are never retried.
    """

    attempts: int = 3
    on: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)
    backoff: Backoff = Backoff()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"a retry policy makes at least 1 attempt, got attempts={self.attempts}")
        if isinstance(self.on, type):
            object.__setattr__(self, "on", (self.on,))
        if not all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in self.on):
            raise ValueError(f"Retry(on=...) takes exception classes, got {self.on!r}")

    def retries(self, error: BaseException, attempt: int) -> bool:
        """Whether failing attempt number ``attempt`` (1 is the first) with ``error`` is tried again."""
        return (
            attempt < self.attempts
            and isinstance(error, self.on)
            and not isinstance(error, Drop | Fault | InvalidPayload)
        )

    def wait_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` before the next one."""
        return self.backoff.wait_s(attempt, rng)
