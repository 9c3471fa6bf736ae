"""The bus's topics hand their agents the bytes that came in, as Faust's raw codec would."""

from __future__ import annotations

from faust.types import TP, Message

from metrobus_app import bus


def message(key: bytes | None, value: bytes | None) -> Message:
    return Message("AddEmail", 0, 7, 1.0, 0, [("h", b"v")], key, value, None, tp=TP("AddEmail", 0))


async def test_an_event_carries_the_key_value_and_headers_as_they_came(test_app):
    topic = bus.topic("AddEmail")
    decode = topic.schema.compile(test_app)
    faust_decode = type(topic.schema).__mro__[1].compile(topic.schema, test_app)  # Faust's own, through the codecs
    for key, value in [(b"42", b'{"header": {}}'), (None, b"\xff not JSON"), (b"k", None), (None, None)]:
        ours, theirs = await decode(message(key, value)), await faust_decode(message(key, value))
        assert (ours.key, ours.value, ours.headers) == (theirs.key, theirs.value, theirs.headers)
        assert (ours.key, ours.value, ours.headers) == (key, value, {"h": b"v"})
        assert ours.message.offset == 7
