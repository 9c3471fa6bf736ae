"""A stop whose lookup service sometimes times out: a passing failure is tried again, up to 5 times."""

from metrobus_app import Retry, stop
from metrobus_app.core.retry import exponential

EMAILS = {"acc-1": "ann@example.com"}


def lookup_email(account: str) -> str:
    """Stands in for a call to the account service, which may raise TimeoutError."""
    return EMAILS[account]  # an unknown account raises KeyError: not passing, dead-lettered at once


@stop(
    "AddEmail",
    retry=Retry(
        attempts=5,  # every try at this stop, the first included
        on=(TimeoutError, ConnectionError),  # the passing failures; any other exception is final
        # waits of at most 0.2, 0.4, 0.8 and 1.6 s; the jitter takes up to a fifth off each
        backoff=exponential(0.2, factor=2.0, max_s=60.0, jitter=0.2),
    ),
)
def add_email(payload: dict) -> dict:
    return {**payload, "email": lookup_email(payload["account"])}
