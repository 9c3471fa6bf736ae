"""Unit tests of the stop of typed_model.py: called directly with its type, and as the bus calls it."""

import pytest
from typed_model import Order, Priced, price  # your module of stops

from metrobus_app import bus
from metrobus_app.errors import InvalidPayload


def test_price_adds_the_vat():
    assert price(Order(order_id=1, amount=100)) == Priced(order_id=1, amount=100.0, vat=21.0)


def test_price_as_the_bus_calls_it():
    run = bus.calls["Price"]  # a dict in, validated; JSON out
    assert run({"order_id": "1", "amount": 100, "note": "gift"}) == {
        "order_id": 1,
        "amount": 100.0,
        "note": "gift",
        "vat": 21.0,
    }
    with pytest.raises(InvalidPayload) as raised:
        run({"order_id": 1})
    assert raised.value.detail == "InvalidPayload(amount)"
