"""Quota: take one of the account's sending slots; the slot is given back if the message fails later."""

from collections import Counter

from metrobus_app import remember, stop

taken: Counter[str] = Counter()  # slots in use per account, in this worker (a real bus: a database)


@stop("Quota")
def take_slot(payload: dict) -> dict:
    account = str(payload["account_number"])
    taken[account] += 1
    remember({"account": account})
    return payload


@take_slot.compensate
def give_back(payload: dict, log: dict) -> None:
    taken[log["account"]] -= 1
