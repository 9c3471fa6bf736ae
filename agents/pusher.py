"""The pusher: feeds the bus's Source topic with the seed's kind of fake records."""

from __future__ import annotations

import asyncio
import json
import random
import time

import click
from faust.cli import AppCommand, option

from metrobus_app import app, bus, settings
from tables.demo_data import account_range

MESSAGE_TYPE_CODES = ["ALTABC", "ALTDEF", "AUDIT"]


def make_record(x: int, rng: random.Random, accounts: range) -> dict:
    """One raw record, as a client of the bus would send it."""
    return {
        "x": x,
        "message_type_code": rng.choice(MESSAGE_TYPE_CODES),
        "account_number": rng.choice(accounts),
        "pushed_at": time.time(),
    }


@app.command(
    option("--count", type=click.IntRange(min=1), default=1000, show_default=True, help="Records to send."),
    option(
        "--rate",
        type=click.FloatRange(min=0),
        default=0,
        show_default=True,
        help="Records per second; 0 sends as fast as the broker takes them.",
    ),
    option(
        "--accounts",
        type=click.IntRange(1, 1_000_000),
        default=100_000,
        show_default=True,
        help="Draw account numbers from the first N of the seed's range (as make-data).",
    ),
    option("--seed", type=int, default=None, help="Seed for a repeatable stream of records."),
)
async def push(self: AppCommand, count: int, rate: float, accounts: int, seed: int | None) -> None:
    """Send fake records to the Source topic."""
    rng = random.Random(seed)
    numbers = account_range(accounts)
    topic = bus.topic(settings.source_topic)
    producer = await self.app.maybe_start_producer()
    started = time.monotonic()
    with click.progressbar(
        length=count, label=f"pushing to {settings.source_topic}", file=click.get_text_stream("stderr")
    ) as bar:
        for x in range(count):
            if rate:
                delay = started + x / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            record = make_record(x, rng, numbers)
            await topic.send(key=str(record["account_number"]).encode(), value=json.dumps(record).encode())
            if x % 1000 == 999:
                bar.update(1000)
        await producer.flush()
        bar.update(count % 1000)
    elapsed = time.monotonic() - started
    click.echo(f"pushed {count} records to {settings.source_topic} in {elapsed:.1f} s ({count / elapsed:.0f}/s)")
