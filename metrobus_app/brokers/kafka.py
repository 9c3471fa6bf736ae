"""Apache Kafka (KRaft) on this machine, for tests, benchmarks and ``./demo.sh --broker kafka``.

The broker's jars come from Maven Central (``org.apache.kafka:kafka_2.13`` and its runtime,
plus a logging backend: reload4j for 3.x, log4j 2 for 4.x), fetched once by Maven into
``.kafka/<version>/lib`` and reused; the machine's Java runs them. One node is a combined
broker and controller; a cluster is that, ``nodes`` times, with replication ``nodes`` and
``min.insync.replicas`` 2. Each run formats its own temporary folder, so every start is a
fresh, empty cluster.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..errors import MetrobusError
from .ports import free_ports, port_open

KAFKA_VERSION = os.environ.get("METROBUS_KAFKA_VERSION", "4.4.0")
# A small heap and the quick JIT start a node in a few seconds; benchmarks pass their own.
TEST_JVM = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
# Kafka 3.x logs through reload4j (log4j 1), 4.x through log4j 2: each its backend and file.
LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""
LOG4J2 = """\
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""
LOGGING_JARS = {
    3: ("org.slf4j:slf4j-reload4j:1.7.36", "ch.qos.reload4j:reload4j:1.2.25"),
    4: ("org.apache.logging.log4j:log4j-slf4j-impl:2.24.3", "org.apache.logging.log4j:log4j-core:2.24.3"),
}
POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>metrobus</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def major(version: str) -> int:
    return int(version.split(".", 1)[0])


def pom(version: str) -> str:
    """The Maven project whose runtime dependencies are Kafka ``version``'s broker and a logging backend."""
    artifacts = (f"org.apache.kafka:kafka_2.13:{version}", *LOGGING_JARS[min(major(version), 4)])
    return POM.format(
        dependencies="\n".join(
            "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>".format(
                *artifact.split(":")
            )
            for artifact in artifacts
        )
    )


def kafka_home() -> Path:
    """Where the jars are kept: ``$METROBUS_KAFKA_HOME``, else ``.kafka/`` of this checkout."""
    if home := os.environ.get("METROBUS_KAFKA_HOME"):
        return Path(home)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists():
        return checkout / ".kafka"
    return Path.home() / ".cache" / "metrobus" / "kafka"


def kafka_jars(version: str = KAFKA_VERSION) -> Path:
    """The folder of Apache Kafka ``version``'s jars, fetched with Maven the first time."""
    folder = kafka_home() / version
    lib = folder / "lib"
    if (lib / ".complete").exists():
        return lib
    for tool in ("mvn", "java"):
        if shutil.which(tool) is None:
            raise MetrobusError(f"Apache Kafka needs '{tool}' on the PATH (apt-get install maven openjdk-17-jdk)")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same version
        if (lib / ".complete").exists():
            return lib
        print(f"fetching Apache Kafka {version} from Maven Central into {lib} (once)", flush=True)
        (folder / "pom.xml").write_text(pom(version))
        partial = folder / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        done = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(folder / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise MetrobusError(f"Maven could not fetch Apache Kafka {version}: {' / '.join(tail)}")
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        (lib / ".complete").touch()
    return lib


def cluster_id() -> str:
    """A new KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Drawn again while it starts with '-', which the format tool would take for an option
    (Kafka's own ``Uuid.randomUuid`` does the same).
    """
    while (drawn := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return drawn


@dataclass
class KafkaNode:
    """One combined broker and controller of a :class:`KafkaBroker`."""

    node_id: int
    port: int
    controller_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def properties(self, voters: str, nodes: int) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.folder / "data",
            "default.replication.factor": nodes,
            "min.insync.replicas": min(2, nodes),
            "offsets.topic.replication.factor": nodes,
            "offsets.topic.num.partitions": 5,
            "transaction.state.log.replication.factor": nodes,
            "transaction.state.log.min.isr": min(2, nodes),
            "transaction.state.log.num.partitions": 5,
            "group.initial.rebalance.delay.ms": 0,
            "num.partitions": 1,
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())


class KafkaBroker:
    """Run Apache Kafka while the context is open: one node, or a cluster of ``nodes``.

    ``url`` is for METROBUS_BROKER, ``bootstrap`` for a plain client; ``process`` is the first
    node's. The folder (configuration, data, logs) is a temporary one unless given.
    """

    kind = "kafka"

    def __init__(
        self,
        nodes: int = 1,
        *,
        folder: Path | None = None,
        log_path: Path | None = None,
        port: int | None = None,
        version: str = KAFKA_VERSION,
        jvm: tuple[str, ...] = TEST_JVM,
    ) -> None:
        self.version = version
        self.jvm = jvm
        self.log_path = log_path
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="metrobus-kafka-"))
        ports = free_ports(2 * nodes, port)
        self.nodes = [KafkaNode(n + 1, ports[n], ports[nodes + n], self.folder / f"node-{n + 1}") for n in range(nodes)]

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.nodes[0].process

    @property
    def url(self) -> str:
        return ";".join(f"kafka://{node.bootstrap}" for node in self.nodes)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def _java(self, lib: Path, node: KafkaNode, main: str, *args: str) -> list[str]:
        log4j = node.folder / "log4j.properties"
        if major(self.version) < 4:
            logging = f"-Dlog4j.configuration=file:{log4j}"
        else:
            logging = f"-Dlog4j2.configurationFile={log4j}"
        return ["java", *self.jvm, logging, "-cp", f"{lib}/*", main, *args]

    def start(self, timeout: float = 90.0) -> KafkaBroker:
        """Format every node's folder, start them, and wait until each is in the cluster's metadata."""
        lib = kafka_jars(self.version)
        if shutil.which("java") is None:
            raise MetrobusError("Apache Kafka needs 'java' on the PATH (apt-get install openjdk-17-jdk)")
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        cluster = cluster_id()
        formats = []
        for node in self.nodes:
            node.folder.mkdir(parents=True, exist_ok=True)
            (node.folder / "server.properties").write_text(node.properties(voters, len(self.nodes)))
            (node.folder / "log4j.properties").write_text(
                (LOG4J if major(self.version) < 4 else LOG4J2).format(log=node.log_path)
            )
            config = str(node.folder / "server.properties")
            formats.append(
                subprocess.run(
                    self._java(lib, node, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", config),
                    capture_output=True,
                    text=True,
                )
            )
        for done in formats:
            if done.returncode != 0:
                raise MetrobusError(f"formatting the Kafka folder failed: {(done.stdout + done.stderr).strip()}")
        for node in self.nodes:
            self._launch(lib, node)
        self.wait_ready(timeout)
        return self

    def _launch(self, lib: Path, node: KafkaNode) -> None:
        out = open(node.folder / "stdout.log", "ab")  # noqa: SIM115
        command = self._java(lib, node, "kafka.Kafka", str(node.folder / "server.properties"))
        node.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Return once each running node answers a metadata request that lists every running node."""
        running = [node for node in self.nodes if node.process and node.process.poll() is None]
        want = {node.node_id for node in running}
        deadline = time.monotonic() + timeout
        while True:
            for node in running:
                if node.process is not None and node.process.poll() is not None:
                    raise MetrobusError(
                        f"Kafka node {node.node_id} exited with code {node.process.returncode}; "
                        f"its log: {node.log_path}"
                    )
            if all(port_open(node.port) and want <= brokers_in_metadata(node.bootstrap) for node in running):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise MetrobusError(f"Apache Kafka did not answer with {len(want)} brokers within {timeout:.0f} s")
            time.sleep(0.2)

    def kill(self, node_id: int) -> None:
        """``kill -9`` one node, as a machine that dies."""
        process = self.nodes[node_id - 1].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self, node_id: int, timeout: float = 90.0) -> None:
        """Start a stopped node again on its own folder and wait until it is back in the metadata."""
        self._launch(kafka_jars(self.version), self.nodes[node_id - 1])
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 20 s) and remove the folder made for them."""
        running = [n.process for n in self.nodes if n.process is not None and n.process.poll() is None]
        for process in running:
            process.terminate()
        for process in running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.log_path is not None:
            with open(self.log_path, "ab") as log:
                for node in self.nodes:
                    if node.log_path.exists():
                        log.write(f"==> node {node.node_id}\n".encode() + node.log_path.read_bytes())
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def brokers_in_metadata(bootstrap: str) -> set[int]:
    """The node ids a metadata request to ``bootstrap`` lists; empty when nothing answers."""
    from aiokafka.client import AIOKafkaClient

    async def ask() -> set[int]:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await asyncio.wait_for(client.bootstrap(), 5)
            return {broker.nodeId for broker in client.cluster.brokers()}
        finally:
            await client.close()

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a node not up yet is expected here, not an error to log
    try:
        return asyncio.run(ask())
    except Exception:
        return set()
    finally:
        quiet.setLevel(level)
