"""Run the seed's demo bus on this machine: broker, data, caches, worker, pusher. Ctrl-C stops it all.

The broker is Tansu (embedded, in memory) unless ``--broker kafka``: then Apache Kafka, one KRaft
node (``metrobus_app.brokers.kafka``; needs java and mvn).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import click

from metrobus_app.brokers import BROKERS, EmbeddedBroker, KafkaBroker, free_port, local_broker
from metrobus_app.errors import MetrobusError

ROOT = Path(__file__).resolve().parents[1]
FAUST = [sys.executable, "-m", "faust", "-A", "metrobus_app"]


# ALTDEF records take a sending slot first, which is given back if the message fails later.
QUOTA_RULE = (
    "routes",
    "set",
    "quota",
    "--when",
    "message_type_code=ALTDEF",
    "--route",
    "Quota,AddEmail,WhiteList,Log",
    "--description",
    "takes a sending slot, given back (compensated) when the mail server refuses the message",
)


class DemoError(click.ClickException):
    """A step of the demo failed; the message says which and where its log is."""


def faust(env: dict[str, str], *args: str) -> None:
    """Run a metrobus CLI command, showing its output; stop the demo if it fails."""
    click.secho(f"$ faust -A metrobus_app {' '.join(args)}", fg="cyan")
    if subprocess.run([*FAUST, *args], env=env, cwd=ROOT).returncode != 0:
        raise DemoError(f"'faust -A metrobus_app {args[0]}' failed")


def background(stack: ExitStack, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start a metrobus CLI command that runs until the demo stops."""
    out = stack.enter_context(open(log, "wb"))  # noqa: SIM115
    process = subprocess.Popen([*FAUST, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    stack.callback(stop_process, process)
    return process


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


class CacheProgress:
    """How far the caches have loaded: one updating line on a terminal; elsewhere (a log, a pipe) a line
    each time another 10 % has loaded or 5 s have passed, and a last one when done."""

    STEP, EVERY_S = 0.10, 5.0

    def __init__(
        self, want: dict[str, int], tty: bool | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.want, self.clock = want, clock
        self.tty = click.get_text_stream("stdout").isatty() if tty is None else tty
        self.shown: tuple[float, float] | None = None  # (share, when) of the last line printed

    def line(self, have: dict[str, int]) -> str:
        return f"  caches: {have}, want {self.want}"

    def show(self, have: dict[str, int]) -> None:
        if self.tty:
            click.echo(f"\r{self.line(have)}   ", nl=False)
            return
        share, now = sum(have.values()) / max(sum(self.want.values()), 1), self.clock()
        if self.shown is None or share >= self.shown[0] + self.STEP or now >= self.shown[1] + self.EVERY_S:
            click.echo(f"{self.line(have)} ({share:.0%})")
            self.shown = (share, now)

    def done(self, have: dict[str, int]) -> None:
        if self.tty:
            click.echo(f"\r{self.line(have)}   ")  # the updating line, finished
        else:
            click.echo(f"{self.line(have)}: loaded")


def wait_for_caches(worker: subprocess.Popen[bytes], url: str, log: Path, want: dict[str, int]) -> None:
    """Wait until the worker serves its web port and holds every cache entry that was warmed."""
    deadline = time.monotonic() + 180
    progress = CacheProgress(want)
    while True:
        if worker.poll() is not None:
            raise DemoError(f"the worker stopped (exit code {worker.returncode}); see {log}")
        try:
            caches = get_json(f"{url}caches/")
            have = {name: info["entries"] for name, info in caches.items()}
            if have == want and all(info["ready"] for info in caches.values()):
                progress.done(have)
                return
            progress.show(have)
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise DemoError(f"the caches did not load within 3 minutes; see {log}")
        time.sleep(1)


SHOWN = ("retried", "dropped", "dead_lettered", "compensating", "compensated", "expired", "delivered")


def summary(stops: dict[str, dict]) -> str:
    """One line: what each stop received, retried, dropped, dead-lettered, compensated and delivered."""
    parts = []
    for name, counts in stops.items():
        if "-retry-" in name and not counts["received"]:  # a delay topic's agent with nothing to send back
            continue
        text = f"{name} {counts['received']} in"
        for fate in SHOWN:
            if counts.get(fate):
                text += f", {counts[fate]} {fate.replace('_', '-')}"
        parts.append(text)
    return " | ".join(parts)


def count_lines(path: Path) -> int:
    return sum(1 for line in path.open() if line.strip())


def start_broker(stack: ExitStack, kind: str, port: int, log: Path) -> EmbeddedBroker | KafkaBroker:
    """Start the demo's broker; it stops with the stack, also when a signal cuts its start short."""
    broker = local_broker(kind, port=port, log_path=log)
    stack.callback(broker.stop)  # before start(): a Ctrl-C while Kafka starts must stop its JVM too
    if isinstance(broker, KafkaBroker):
        click.echo(f"starting Apache Kafka {broker.version} (KRaft, one node)")
    try:
        broker.start()
    except MetrobusError as error:
        raise DemoError(str(error)) from None
    if isinstance(broker, KafkaBroker):
        where = f"Apache Kafka {broker.version}, KRaft, data in {broker.folder}"
    else:
        where = "Tansu, in memory"
    click.secho(f"broker ({where}) listening on {broker.bootstrap}", fg="green")
    return broker


def ignore_signals() -> None:
    """Let the stack stop everything: a second Ctrl-C must not cut Kafka's shutdown short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@click.command()
@click.option("--rate", type=click.FloatRange(min=0.1), default=20, show_default=True, help="Records per second.")
@click.option("--accounts", type=click.IntRange(1, 1_000_000), default=100_000, show_default=True)
@click.option("--duration", type=click.FloatRange(min=1), default=None, help="Stop after this many seconds.")
@click.option(
    "--broker",
    "broker_kind",
    type=click.Choice(BROKERS),
    default="tansu",
    show_default=True,
    help="tansu: embedded, in memory; kafka: Apache Kafka (KRaft), needs java and mvn.",
)
@click.option(
    "--broker-port",
    type=click.IntRange(1, 65535),
    default=9092,
    show_default=True,
    help="Used when free, else any free port.",
)
@click.option(
    "--web-port",
    type=click.IntRange(1, 65535),
    default=6066,
    show_default=True,
    help="Used when free, else any free port.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=ROOT / "data",
    help="Generated cache files are kept here between runs.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=ROOT / ".metrobus" / "demo",
    help="Logs and worker state of this run (emptied at start).",
)
@click.option(
    "--flaky-every",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="The first contact lookup of every Nth record times out (AddEmail retries it); 0: never.",
)
@click.option(
    "--fault-every",
    type=click.IntRange(min=0),
    default=25,
    show_default=True,
    help="The mail server refuses every Nth record for good (the Quota slot is given back); 0: never.",
)
def main(
    rate: float,
    accounts: int,
    duration: float | None,
    broker_kind: str,
    broker_port: int,
    web_port: int,
    data_dir: Path,
    state_dir: Path,
    flaky_every: int,
    fault_every: int,
) -> None:
    """Run the demo bus: pusher -> busdriver -> AddEmail -> WhiteList -> Log."""
    # Stop cleanly on SIGTERM as on Ctrl-C, and on Ctrl-C's SIGINT also when started in the
    # background (a shell without job control starts it with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    state = state_dir.resolve()
    # Either broker starts empty (Tansu keeps nothing, Kafka formats a new folder): worker state
    # from an earlier run would not match it.
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    data = data_dir.resolve() / f"demo-{accounts}"
    with ExitStack() as stack:
        try:
            broker = start_broker(stack, broker_kind, free_port(broker_port), state / "broker.log")
            web_port = free_port(web_port)
            env = {k: v for k, v in os.environ.items() if not k.startswith("METROBUS_")}
            env.update(
                METROBUS_BROKER=broker.url, METROBUS_DATA_DIR=str(state / "worker"), METROBUS_WEB_PORT=str(web_port)
            )
            env.update(DEMO_FLAKY_EVERY=str(flaky_every), DEMO_FAULT_EVERY=str(fault_every))
            if not (data / "whitelist.dat").exists():
                faust(env, "make-data", "--out", str(data), "--accounts", str(accounts))
            faust(env, "warm", "--emails", str(data / "emails.dat"), "--whitelist", str(data / "whitelist.dat"))
            faust(env, *QUOTA_RULE)
            worker_log = state / "worker.log"
            worker = background(stack, env, worker_log, "worker", "-l", "info")
            url = f"http://127.0.0.1:{web_port}/metrobus/"
            click.echo(f"worker starting (log: {worker_log}); loading caches")
            want = {"emails": count_lines(data / "emails.dat"), "whitelist": count_lines(data / "whitelist.dat")}
            wait_for_caches(worker, url, worker_log, want)
            pusher = background(
                stack,
                env,
                state / "pusher.log",
                "push",
                "--count",
                "1000000000",
                "--rate",
                str(rate),
                "--accounts",
                str(accounts),
            )
            click.secho("\nThe demo bus is running.", fg="green", bold=True)
            click.echo(f"  dashboard:           {url}")
            click.echo(f"  what each stop did:  {url}stats/")
            click.echo(f"  Prometheus metrics:  {url}metrics")
            click.echo(f"  cache sizes:         {url}caches/")
            click.echo(f"  one lookup:          {url}caches/emails/{1_000_000 + accounts - 1}")
            click.echo(f"  worker log:          {worker_log}")
            click.echo("Press Ctrl-C to stop (broker, worker and pusher stop with it).\n")
            started = time.monotonic()
            while duration is None or time.monotonic() - started < duration:
                time.sleep(min(5, duration or 5))
                if worker.poll() is not None or pusher.poll() is not None:
                    raise DemoError(f"a process of the demo stopped; see the logs in {state}")
                click.echo(f"  {time.monotonic() - started:5.0f} s  " + summary(get_json(f"{url}stats/")["stops"]))
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM, at any point: the stack stops what started
            click.echo("\nstopping")
        finally:
            ignore_signals()
    click.echo("demo stopped")


if __name__ == "__main__":
    main()
