"""The schema of the bus's topics: keys and values stay the bytes that came in.

Faust decodes every record's key and value through its codec registry, even with the
``raw`` codec (which returns the bytes as they are): two calls several levels deep per
record. The bus's agents decode envelopes themselves, so ``RawSchema`` builds the event
straight from the message. Sending through such a topic is Faust's own ``Schema``.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.types import AppT, EventT, Message


class RawSchema(faust.Schema):
    """Bytes keys and values, ``raw`` both ways; decoding is the event made from the message."""

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def compile(self, app: AppT, **kwargs: Any) -> Any:
        create_event = app.create_event

        async def decode(message: Message, *, propagate: bool = False) -> EventT:
            return create_event(message.key, message.value, message.headers, message)

        return decode
