"""The demo's payload types: a stop annotated with one gets its payload validated (metrobus_app/core/payloads.py).

TypedDicts: a stop gets (and returns) a plain dict, checked on the way in; fields of the
payload's own that the type does not name go along (``extra="allow"``).
"""

from typing import NotRequired  # pydantic needs typing_extensions' TypedDict on 3.11

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict


@with_config(ConfigDict(extra="allow"))
class Record(TypedDict):
    """A raw record as the pusher sends it. Both fields may be missing: the rules route a record
    without a type by the default route, and AddEmail refuses one without an account."""

    message_type_code: NotRequired[str]
    account_number: NotRequired[int]


@with_config(ConfigDict(extra="allow"))
class Account(TypedDict):
    """What AddEmail needs: the account number."""

    account_number: int


@with_config(ConfigDict(extra="allow"))
class Contact(Account):
    """An account with its email address: what WhiteList needs."""

    email: str
