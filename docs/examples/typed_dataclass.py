"""A stop typed with dataclasses: it gets a Parcel, and the Label it returns is the payload that goes on."""

from dataclasses import dataclass

from metrobus_app import stop


@dataclass
class Parcel:
    weight_kg: float
    country: str = "NL"


@dataclass
class Label:
    country: str
    postage_eur: float


@stop("Postage")
def postage(parcel: Parcel) -> Label:
    per_kg = 4.5 if parcel.country == "NL" else 9.0
    return Label(parcel.country, round(parcel.weight_kg * per_kg, 2))
