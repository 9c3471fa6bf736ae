"""CPU of the bus's own per-record work, without a broker: what a worker spends between fetch and send.

The demo bus's stops handle records the way a worker's agents do (``intake._serve_batch`` on
batches of aiokafka records, ``Bus.handle``, ``forward``, the observers, ``BatchingSend`` filling
aiokafka batches), but the records come from memory and the batches go nowhere: no broker, no
consumer thread, no event-loop waits. So the figure is the bus's own code only, and it drifts
far less than an end-to-end run (``bus_benchmark.py``) on a shared machine.

    .venv/bin/python benchmarks/hop_benchmark.py            # 20,000 records x 5 rounds
    .venv/bin/python benchmarks/hop_benchmark.py --quick    # 2,000 records x 2 rounds

For figures that do not drift at all, count instructions: under ``valgrind --tool=callgrind``
(instructions, not seconds), run ``--rounds 1`` and ``--rounds 3`` and divide the difference
by twice ``--records`` (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import click
import orjson

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STOPS = ("AddEmail", "WhiteList", "Log")
BATCH_RECORDS = 500  # records per fetched batch, about what a worker's fetches hold in a burst


def sdk_tracing(group: str) -> Any:
    """Tracing on, as a worker has it with an SDK: spans batched to an exporter (here one that drops them)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from metrobus_app.observe.tracing import Tracing

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    return Tracing(provider.get_tracer("metrobus"), group)


async def run(records: int, rounds: int, seed: int, tracing: bool = False) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from aiokafka import AIOKafkaProducer
    from aiokafka.structs import ConsumerRecord, TopicPartition

    import agents.busdriver
    import agents.contactpoint
    import agents.logstop
    import agents.whitelist  # noqa: F401  (the demo stops declare themselves)
    from agents.pusher import make_record
    from metrobus_app import app, bus
    from metrobus_app.routing.rule_set import RouteRules
    from metrobus_app.runtime.intake import Batch, _serve_batch
    from metrobus_app.runtime.producing import BatchingSend
    from tables import emails, whitelist

    app.finalize()
    app.flow_control.resume()
    rng = random.Random(seed)
    accounts = range(1_000_000, 1_010_000)
    rules = RouteRules.of(bus)
    for cache in (emails, whitelist, *([rules.cache] if rules else [])):
        cache.open("memory://", Path("."))
        cache.ready.set()
    for account in accounts:  # about the demo data's shares: 70% have an email, 60% of those whitelisted
        if rng.random() < 0.7:
            email = f"user{account}@example.com".encode()
            emails.store.data[str(account).encode()] = email
            if rng.random() < 0.6:
                whitelist.store.data[email] = b"1"
    assert app.watch.fates.record in bus.observers  # the app's fate store observes every outcome, as in a worker

    aio = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never started: batches only
    aio._metadata.partitions_for_topic = lambda topic: {0, 1, 2, 3}
    taken = asyncio.get_running_loop().create_future()
    taken.set_result(None)

    async def send_batch(batch: Any, topic: str, partition: int) -> asyncio.Future:
        return taken

    aio.send_batch = send_batch
    producer = type("Producer", (), {"_ensure_producer": staticmethod(lambda: aio)})()
    batching = BatchingSend(producer, app.on_produce_message, lambda future: None, linger_s=0.005, batch_bytes=65_536)
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def sender(topic: str, key: bytes | None, value: bytes, headers: list | None = None) -> None:
        sent.append((topic, key, value))
        await batching(topic, key, value, headers)

    def offer(topic: str, key: bytes | None, value: bytes, headers: list | None = None) -> bool:
        if not batching.offer(topic, key, value, headers):
            return False  # the bus awaits the sender with it then
        sent.append((topic, key, value))
        return True

    if tracing:
        bus.tracing = sdk_tracing(app.settings.app_id)

    bus.sender = sender
    bus.offer = offer
    handlers = {"Source": partial(bus.handle_record, "busdriver", bus.calls["busdriver"])}
    handlers.update({name: partial(bus.handle, name, bus.calls[name]) for name in STOPS})
    gc.freeze()  # as a worker does after start-up (metrobus_app/application.py)
    gc.set_threshold(50_000, 20, 100)

    results = []
    with click.progressbar(range(rounds), label="rounds", file=sys.stderr) as bar:
        for number in bar:
            first = number * records
            made = (make_record(x, rng, accounts) for x in range(first, first + records))
            waiting = {"Source": [(str(r["account_number"]).encode(), orjson.dumps(r)) for r in made]}
            cpu, handled = 0.0, {}
            for topic, handle in handlers.items():
                now_ms = int(time.time() * 1000)
                batch = [
                    ConsumerRecord(topic, 0, offset, now_ms, 0, key, value, None, 0, 0, ())
                    for offset, (key, value) in enumerate(waiting.pop(topic, []))
                ]
                sent.clear()
                started = time.process_time()
                for at in range(0, len(batch), BATCH_RECORDS):
                    part = Batch(TopicPartition(topic, 0), batch[at : at + BATCH_RECORDS], app.consumer_generation_id)
                    await _serve_batch(app, part, handle, None, 64)
                cpu += time.process_time() - started
                handled[topic] = len(batch)
                for to, key, value in sent:
                    waiting.setdefault(to, []).append((key, value))
            await batching.ship()
            results.append({"cpu_us_per_record": round(cpu / records * 1e6, 1), "handled": handled})
    figures = [r["cpu_us_per_record"] for r in results]
    return {
        "rounds": results,
        "cpu_us_per_record": {"best": min(figures), "median": statistics.median(figures)},
    }


def git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="2,000 records x 2 rounds: a few seconds.")
@click.option("--records", type=click.IntRange(min=1), default=None, help="Source records a round [20000; quick 2000].")
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Rounds [5; quick 2].")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the records and the cache content.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="JSON file [results/...].")
@click.option("--tracing", is_flag=True, help="Tracing on: a span per hop, batched by the OpenTelemetry SDK.")
def main(quick: bool, records: int | None, rounds: int | None, seed: int, out: Path | None, tracing: bool) -> None:
    """CPU microseconds of the bus's own code per source record (four hops of the demo route), no broker."""
    records = records or (2_000 if quick else 20_000)
    rounds = rounds or (2 if quick else 5)
    from bus.report import machine

    figures = asyncio.run(run(records, rounds, seed, tracing))
    now = datetime.datetime.now(datetime.UTC)
    report = {
        "kind": "hop",
        "time": now.isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "settings": {
            "records": records,
            "rounds": rounds,
            "seed": seed,
            "batch_records": BATCH_RECORDS,
            "tracing": tracing,
        },
        "machine": machine(),
        **figures,
    }
    out = out or RESULTS / f"hop-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for number, result in enumerate(report["rounds"], 1):
        handled = ", ".join(f"{topic} {n}" for topic, n in result["handled"].items())
        click.echo(f"round {number}: {result['cpu_us_per_record']:7.1f} us CPU a source record ({handled})")
    best, median = report["cpu_us_per_record"]["best"], report["cpu_us_per_record"]["median"]
    click.echo(f"best {best} us, median {median} us a source record; figures in {out}")


if __name__ == "__main__":
    main()
