"""A stop typed with a pydantic model: its payload is validated and converted before it runs."""

from pydantic import BaseModel, ConfigDict

from metrobus_app import stop


class Order(BaseModel):
    model_config = ConfigDict(extra="allow")  # the payload's other fields go along

    order_id: int
    amount: float


class Priced(Order):
    vat: float


@stop("Price")
def price(order: Order) -> Priced:
    return Priced(**order.model_dump(), vat=round(order.amount * 0.21, 2))
