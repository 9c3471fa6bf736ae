"""Contact point: add the account's email address from the emails cache."""

from metrobus_app import Drop, stop
from tables import emails


@stop("AddEmail")
def add_email(payload: dict) -> dict:
    email = emails.get(str(payload["account_number"]))
    if email is None:
        raise Drop("no email for account")
    payload["email"] = email
    return payload
