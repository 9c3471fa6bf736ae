"""An order's journey, Reserve -> Charge -> Ship: if Ship fails for good, Charge and then Reserve are undone."""

from metrobus_app import Fault, Retry, bus, remember, stop
from metrobus_app.core.retry import fixed

HOLDS: dict[str, str] = {}  # stands in for the stock service: hold id -> sku
CHARGES: dict[str, int] = {}  # stands in for the payment service: order id -> amount charged
COUNTRIES = {"BE", "NL", "FR"}  # where a carrier ships


@stop("Reserve")
def reserve(order: dict) -> dict:
    hold = f"hold-{order['id']}"
    HOLDS[hold] = order["sku"]
    remember({"hold": hold})  # the log release() gets, should the order fail later
    return {**order, "reserved": True}


@reserve.compensate
def release(order: dict, log: dict) -> None:
    HOLDS.pop(log["hold"], None)  # may run twice (at least once): undoing twice is harmless


@stop("Charge", retry=Retry(attempts=3, on=(TimeoutError,), backoff=fixed(0.5)))
def charge(order: dict) -> dict:
    CHARGES[order["id"]] = order["amount"]
    return {**order, "charged": True}


@bus.compensate("Charge")  # the same as @charge.compensate
async def refund(order: dict, log: None) -> None:  # Charge remembered nothing: log is None
    CHARGES.pop(order["id"], None)


@stop("Ship")
def ship(order: dict) -> dict:
    if order["country"] not in COUNTRIES:
        raise Fault(f"no carrier ships to {order['country']}")  # fails for good, on purpose
    return {**order, "shipped": True}
