"""A busdriver that gives express orders 30 seconds to reach each stop of their journey."""

from metrobus_app import Envelope, busdriver


@busdriver()
def route(record: dict) -> Envelope:
    stops = ["Reserve", "Charge", "Ship"]
    if record.get("express"):
        return Envelope.stamp(record, stops, deadline_s=30.0)  # header.deadline: now + 30 s
    return Envelope.stamp(record, stops)
