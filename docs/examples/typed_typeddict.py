"""Stops typed with the demo's TypedDicts: a plain dict comes in, checked, and a dict goes on."""

from agents.payloads import Account, Contact, Record  # the demo's types (shown above)
from metrobus_app import Drop, busdriver, stop


@busdriver()
def route(record: Record) -> list[str]:
    return ["AddEmail", "Log"] if record.get("message_type_code") == "AUDIT" else ["AddEmail", "WhiteList", "Log"]


@stop("AddEmail")
def add_email(account: Account) -> Contact:
    return {**account, "email": f"{account['account_number']}@example.com"}


@stop("WhiteList")
def check_whitelist(contact: Contact) -> Contact:
    if not contact["email"].startswith("1"):
        raise Drop("email not whitelisted")
    return contact
