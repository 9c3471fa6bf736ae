"""Whitelist: let a message through only when its email is whitelisted."""

from agents.payloads import Contact
from metrobus_app import Drop, stop
from tables import whitelist


@stop("WhiteList")
def check_whitelist(contact: Contact) -> Contact:
    if contact["email"] not in whitelist:
        raise Drop("email not whitelisted")
    contact["whitelist"] = True
    return contact
