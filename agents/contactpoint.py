"""Contact point: add the account's email address from the emails cache; a lookup that times out is tried again."""

from metrobus_app import Drop, Retry, exponential, stop
from tables import emails
from tables.demo_faults import lookup_times_out


@stop("AddEmail", retry=Retry(attempts=4, on=(TimeoutError,), backoff=exponential(0.05, max_s=0.4)))
def add_email(payload: dict) -> dict:
    if lookup_times_out(payload):
        raise TimeoutError("contact lookup timed out (the demo's DEMO_FLAKY_EVERY)")
    email = emails.get(str(payload["account_number"]))
    if email is None:
        raise Drop("no email for account")
    payload["email"] = email
    return payload
