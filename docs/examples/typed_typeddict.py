"""Stops typed with TypedDicts (the demo's): a plain dict comes in, checked, and a dict goes on."""

from typing import NotRequired

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic needs typing_extensions' TypedDict on 3.11

from metrobus_app import Drop, busdriver, stop


@with_config(ConfigDict(extra="allow"))
class Record(TypedDict):
    message_type_code: NotRequired[str]  # may be missing: the record still validates
    account_number: NotRequired[int]  # may be missing too; declared, so a route may start at AddEmail


@with_config(ConfigDict(extra="allow"))
class Account(TypedDict):
    account_number: int


@with_config(ConfigDict(extra="allow"))
class Contact(Account):
    email: str


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
