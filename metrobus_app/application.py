"""The one Faust app of a metrobus worker, built from ``Settings``."""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Any, NoReturn, cast

import faust
import mode.loop
from faust.transport import by_url

from metrobus_app.caches.loader import CacheLoader
from metrobus_app.cli.accounting import register_accounting_commands
from metrobus_app.cli.asyncapi import register_asyncapi_command
from metrobus_app.cli.commands import one_line_errors, register_commands
from metrobus_app.cli.routes import register_routes_command
from metrobus_app.config.checks import EXACTLY_ONCE
from metrobus_app.config.redaction import install as install_redaction
from metrobus_app.config.redaction import settings_secrets
from metrobus_app.config.settings import Settings
from metrobus_app.core.bus import Bus
from metrobus_app.errors import ConfigError
from metrobus_app.observe.cluster_view import Watch
from metrobus_app.observe.tracing import configure as configure_tracing
from metrobus_app.observe.tracing import shutdown as shutdown_tracing
from metrobus_app.routing.rule_set import RouteRules
from metrobus_app.runtime.broker_health import BROKER_NAMES, fetch_wait_ms, wait_for_broker, watch_broker
from metrobus_app.runtime.broker_versions import BrokerIncompatible
from metrobus_app.runtime.compat import ready_for_producer_ids
from metrobus_app.runtime.delivery import install as install_delivery
from metrobus_app.runtime.seams import check as check_seams
from metrobus_app.runtime.shutdown import ShutdownDeadline
from metrobus_app.runtime.transport import Transport
from metrobus_app.security.credentials import broker_credentials
from metrobus_app.security.web_guard import WebGuard
from metrobus_app.web.routes import routes_blueprint
from metrobus_app.web.views import blueprint

log = logging.getLogger("metrobus.app")


class Worker(faust.Worker):
    """Faust's worker without the terminal spinner (same class name, so its log still says ``[^Worker]: Ready``).

    To spin on every log record, Faust's worker sets the root logger to DEBUG whenever the
    log level is WARN or above, so every ``debug`` call of Faust, aiokafka and mode builds a
    record and runs the handlers: about 16% of a stop's CPU per message, measured by
    benchmarks/bus_benchmark.py's profile.
    """

    def _setup_spinner_handler(self, logger: logging.Logger, level: int) -> None:
        return None

    def execute_from_commandline(self) -> NoReturn:
        """Make the data dir before anything starts; one line and exit 1 when it cannot be made."""
        try:
            prepare_data_dir(self.workdir / self.app.conf.datadir)  # relative to --workdir, as Faust's is
            app = cast(MetrobusApp, self.app)
            app.bus.tracing = configure_tracing(app.settings)  # in the worker only: commands trace nothing
        except ConfigError as exc:
            raise SystemExit(f"metrobus: {exc}") from None
        super().execute_from_commandline()

    async def stop(self) -> None:
        """Faust's stop, within ``METROBUS_SHUTDOWN_TIMEOUT_S`` (``runtime/shutdown.py``)."""
        self.deadline.arm("told to stop")
        await super().stop()

    def on_worker_shutdown(self) -> None:
        self.deadline.arm("the worker is shutting down")

    @property
    def deadline(self) -> ShutdownDeadline:
        app = cast(MetrobusApp, self.app)
        if app.shutdown_deadline is None:
            app.shutdown_deadline = ShutdownDeadline(app.settings.shutdown_timeout_s)
        return app.shutdown_deadline


class MetrobusApp(faust.App):
    """A Faust app that knows its metrobus settings and uses the metrobus transport."""

    broker_kind: str | None = None  # "tansu" or "kafka" once known (runtime/broker_health.py)
    shutdown_deadline: ShutdownDeadline | None = None  # a worker's, once it runs (never in a test's app)

    def __init__(self, settings: Settings, **options: Any) -> None:
        self.settings = settings
        # Who may use the web server (security/web_guard.py); secrets kept out of log records (config/redaction.py).
        self.web_guard = WebGuard.from_settings(settings)
        install_redaction(settings_secrets(settings, self.web_guard.token))
        options.setdefault("web_application_options", self.web_guard.application_options())
        super().__init__(settings.app_id, **options)
        self.task(self.web_guard.announce)
        self.bus = Bus(self, settings)
        self.bus.rule_set_listeners.append(self._serve_route_rules)
        install_delivery(self)  # sends watched, commits gated, exactly-once fixes: see runtime/delivery.py
        self.task(watch_broker)
        self.task(self.start_bus)
        # Stats and fates of the whole cluster: see observe/cluster_view.py.
        self.watch = Watch(self)
        self.task(self.watch.run)

    def _serve_route_rules(self, rules: RouteRules) -> None:
        """The ``routes`` command and the ``/metrobus/routes/`` view, once a busdriver declares route rules."""
        register_routes_command(self, rules)
        routes_blueprint.register(self, url_prefix="/metrobus/")

    def _create_directories(self) -> None:
        """Faust's own (data, app and table dirs), but the data dir's missing parents made too."""
        prepare_data_dir(self.conf.datadir)
        super()._create_directories()

    async def on_first_start(self) -> None:
        """Before Faust's clients start: wait for the broker, with backoff, saying so (runtime/broker_health.py)."""
        await super().on_first_start()
        try:
            self.broker_kind = await wait_for_broker(self.settings)
        except BrokerIncompatible as exc:
            log.critical("%s", exc)
            raise SystemExit(f"metrobus: {exc}") from None
        self.fetch_wait_ms = fetch_wait_ms(self.settings, self.broker_kind)
        log.info("broker: %s; fetch wait %d ms", BROKER_NAMES[self.broker_kind], self.fetch_wait_ms)
        if self.settings.processing_guarantee == EXACTLY_ONCE:
            check_seams()
        if self.settings.processing_guarantee == EXACTLY_ONCE or self.settings.idempotence == "on":
            await ready_for_producer_ids(self.settings, self.broker_kind)  # Tansu refuses aiokafka's v0

    async def on_stop(self) -> None:
        """Faust's stop, then what the tracing SDK still holds is sent."""
        await super().on_stop()
        if self.bus.tracing is not None:
            shutdown_tracing()

    async def start_bus(self) -> None:
        """Create the bus's topics, then load and follow the caches until the worker stops."""
        await self.bus.declare_topics()
        tune_garbage_collector()
        await CacheLoader(self, list(self.bus.caches.values())).run()

    def command(self, *options: Any, **kwargs: Any) -> Any:
        """Faust's ``app.command``, with expected failures reported in one line (see ``one_line_errors``)."""
        decorate = super().command(*options, **kwargs)
        return lambda fun: decorate(one_line_errors(fun))

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        cls = Transport if by_url(url) is Transport.__mro__[1] else by_url(url)
        return cls(self.conf.broker_consumer, self)


def prepare_data_dir(path: Path) -> None:
    """Create the worker's data dir (``METROBUS_DATA_DIR``), parents included; a ``ConfigError`` if it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(f"METROBUS_DATA_DIR={str(path)!r} cannot be created: {why}") from None


EVENT_LOOPS = ("uvloop", "asyncio")


def install_event_loop(settings: Settings) -> None:
    """Run on uvloop unless ``METROBUS_EVENT_LOOP=asyncio`` or Faust's own ``-L``/``FAUST_LOOP`` chose.

    Called when the default app is made, before ``faust worker`` makes its event loop (and
    its consumer thread makes one of its own). A stop spends a good part of its time in the
    event loop (callbacks, socket reads and writes): uvloop did the same burst with 22% more
    records a second and 14% less CPU per record (benchmarks/bus_benchmark.py, two runs each:
    1,896 -> 2,315 records/s, 0.50 -> 0.43 ms).
    """
    if settings.event_loop not in EVENT_LOOPS:
        raise ConfigError(f"METROBUS_EVENT_LOOP={settings.event_loop!r}: use {' or '.join(EVENT_LOOPS)}")
    if os.environ.get("FAUST_LOOP") or os.environ.get("F_LOOP"):
        return
    if settings.event_loop == "uvloop":
        mode.loop.use("uvloop")


def tune_garbage_collector() -> None:
    """Collect the youngest objects less often, and never scan what the worker built to start.

    Every message allocates a few dozen short-lived objects (Faust's message and event, the
    envelope, futures); with CPython's default (a collection every 700 net allocations) the
    collector took about 6% of a stop's CPU per message (benchmarks/bus_benchmark.py: 0.653 ->
    0.616 ms of CPU per record, peak RSS unchanged at ~100 MB).
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def create_app(settings: Settings, *, autodiscover: tuple[str, ...] = ()) -> MetrobusApp:
    """Build the app: broker, store, web, and timeouts that suit a small bus."""
    return MetrobusApp(
        settings,
        broker=settings.broker,
        broker_credentials=broker_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host=settings.web_bind,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.topic_replication,
        autodiscover=autodiscover,
        origin="metrobus_app",
        key_serializer="raw",
        value_serializer="raw",
        # A group join takes ~30 s with Faust's defaults; a bus should start in seconds.
        broker_rebalance_timeout=3,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        producer_linger=settings.linger_ms / 1000,
        producer_max_batch_size=settings.batch_bytes,
        broker_commit_interval=settings.commit_interval_ms / 1000,
        Worker=Worker,
        web_in_thread=False,
        processing_guarantee=settings.processing_guarantee,
    )


def default_app() -> tuple[Settings, MetrobusApp]:
    """The app ``faust -A metrobus_app`` runs: settings from the environment, every command and view.

    Its stops are the modules of ``METROBUS_MODULES``, which Faust discovers when the worker
    starts. A setting that cannot be used ends the process with one line.
    """
    try:
        settings = Settings.from_env()
        install_event_loop(settings)
    except ConfigError as exc:
        raise SystemExit(f"metrobus: {exc}") from None
    app = create_app(settings, autodiscover=settings.modules)
    register_commands(app)
    register_accounting_commands(app)
    register_asyncapi_command(app)
    blueprint.register(app, url_prefix="/metrobus/")
    return settings, app
