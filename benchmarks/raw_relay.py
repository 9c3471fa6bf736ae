"""The raw relay: the demo bus's four hops by hand, with plain aiokafka and no framework.

The baseline of ``bus_benchmark.py``. One process, one consumer assigned every partition of
``Source``, ``AddEmail``, ``WhiteList`` and ``Log`` (no group, so no rebalance), one producer:

    Source    -> decode the JSON record, stamp the envelope (route by message_type_code), pop the route
    AddEmail  -> decode, look up the email in a dict loaded from emails.dat (drop when none), pop
    WhiteList -> decode, check the email against a set loaded from whitelist.dat (drop when absent), pop
    Log       -> decode, count it delivered

Each hop decodes and encodes the envelope as metrobus does (wire format v1, compact JSON, with
orjson) and sends it on with the key unchanged. The transport settings are the bus's: the fetch
wait is ``--fetch-wait-ms`` (METROBUS_FETCH_WAIT_MS), the producer's linger ``--linger-ms``
(METROBUS_LINGER_MS) and batch size ``--batch-bytes`` (METROBUS_BATCH_BYTES), acks all (Faust's
default acks) and the event loop ``--loop`` (METROBUS_EVENT_LOOP); ``bus_benchmark.py`` gives
each the workers' value.

It prints ``ready`` on stdout once it is assigned and positioned, and runs until SIGTERM/SIGINT.
Plain argparse and no import of metrobus, so its CPU and memory are those of a bare relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import uuid
from typing import Any

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

TOPICS = ("Source", "AddEmail", "WhiteList", "Log")


def load_emails(path: str) -> dict[str, str]:
    emails = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            account, sep, email = line.strip().partition(",")
            if sep:
                emails[account] = email
    return emails


def load_whitelist(path: str) -> set[str]:
    with open(path, encoding="utf-8") as lines:
        return {line.strip() for line in lines if line.strip()}


class Relay:
    def __init__(self, args: argparse.Namespace) -> None:
        self.emails = load_emails(args.emails)
        self.whitelist = load_whitelist(args.whitelist)
        self.routes: dict[str, list[str]] = json.loads(args.routes)
        self.default_route: list[str] = args.default_route.split(",")
        self.counts = {"received": 0, "forwarded": 0, "delivered": 0, "dropped": 0}
        self.producer = AIOKafkaProducer(
            bootstrap_servers=args.bootstrap, linger_ms=args.linger_ms, max_batch_size=args.batch_bytes, acks="all"
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=args.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=args.fetch_wait_ms,
        )
        self.handlers = {
            "Source": self.busdriver,
            "AddEmail": self.add_email,
            "WhiteList": self.check_whitelist,
            "Log": self.log,
        }

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        partitions = []
        for topic in TOPICS:
            found = None
            while not found:
                found = self.consumer.partitions_for_topic(topic)
                if not found:
                    await self.consumer._client.force_metadata_update()
            partitions.extend(TopicPartition(topic, p) for p in sorted(found))
        self.consumer.assign(partitions)
        await self.consumer.seek_to_beginning()
        for tp in partitions:  # resolve every position now, so the first message pays no lookup
            await self.consumer.position(tp)

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                handler = self.handlers[tp.topic]
                for record in records:
                    self.counts["received"] += 1
                    await handler(record.key, record.value)

    async def forward(self, envelope: dict[str, Any], key: bytes | None) -> None:
        header = envelope["header"]
        if not header["route"]:
            self.counts["delivered"] += 1
            return
        stop = header["route"].pop()
        header["historical_route"].append(stop)
        await self.producer.send(stop, key=key, value=orjson.dumps(envelope))
        self.counts["forwarded"] += 1

    async def busdriver(self, key: bytes | None, value: bytes) -> None:
        record = orjson.loads(value)
        route = list(reversed(self.routes.get(record.get("message_type_code"), self.default_route)))
        header = {
            "route": route,
            "original_route": list(route),
            "historical_route": [],
            "id": uuid.uuid4().hex,
            "stamped_at": time.time(),
        }
        await self.forward({"header": header, "payload": record}, key)

    async def add_email(self, key: bytes | None, value: bytes) -> None:
        envelope = orjson.loads(value)
        email = self.emails.get(str(envelope["payload"]["account_number"]))
        if email is None:
            self.counts["dropped"] += 1
            return
        envelope["payload"]["email"] = email
        await self.forward(envelope, key)

    async def check_whitelist(self, key: bytes | None, value: bytes) -> None:
        envelope = orjson.loads(value)
        if envelope["payload"].get("email") not in self.whitelist:
            self.counts["dropped"] += 1
            return
        envelope["payload"]["whitelist"] = True
        await self.forward(envelope, key)

    async def log(self, key: bytes | None, value: bytes) -> None:
        await self.forward(orjson.loads(value), key)


async def main(args: argparse.Namespace) -> None:
    relay = Relay(args)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await relay.start()
    print("ready", flush=True)
    try:
        await relay.run(stopping)
    finally:
        await relay.stop()
        print(json.dumps(relay.counts), flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--emails", required=True, help="emails.dat ('account,email' a line)")
    parser.add_argument("--whitelist", required=True, help="whitelist.dat (one email a line)")
    parser.add_argument("--routes", required=True, help="JSON object: message_type_code -> stops in travel order")
    parser.add_argument("--default-route", required=True, help="comma-separated stops of every other record")
    parser.add_argument("--fetch-wait-ms", type=int, default=10, help="the consumer's fetch_max_wait_ms")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="METROBUS_EVENT_LOOP")
    parser.add_argument("--linger-ms", type=int, default=5, help="the producer's linger_ms (METROBUS_LINGER_MS)")
    parser.add_argument(
        "--batch-bytes", type=int, default=65_536, help="the producer's max_batch_size (METROBUS_BATCH_BYTES)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.loop == "uvloop":
        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
