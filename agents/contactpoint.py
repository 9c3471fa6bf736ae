"""Contact point: add the account's email address from the emails cache; a lookup that times out is tried again."""

from agents.payloads import Account, Contact
from metrobus_app import Drop, Retry, exponential, stop
from tables import emails
from tables.demo_faults import lookup_times_out


@stop("AddEmail", retry=Retry(attempts=4, on=(TimeoutError,), backoff=exponential(0.05, max_s=0.4)))
def add_email(account: Account) -> Contact:
    if lookup_times_out(account):
        raise TimeoutError("contact lookup timed out (the demo's DEMO_FLAKY_EVERY)")
    email = emails.get(str(account["account_number"]))
    if email is None:
        raise Drop("no email for account")
    return {**account, "email": email}
