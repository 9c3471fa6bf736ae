"""A worker told to stop ends within ``METROBUS_SHUTDOWN_TIMEOUT_S``, whatever state it is in.

A graceful stop commits what it can: in exactly-once mode it commits the open transactions
and aborts those it cannot (``transport.Consumer.on_stop``). What it waits on can still hang:
a broker that no longer answers, a stop that never returns, a library thread that outlives the
event loop (a consumer thread left in the group once kept a worker alive for good). So once a
stop begins, a timer *thread* (it runs even when the event loop is blocked or already closed)
ends the process when the deadline passes. That loses nothing: offsets not committed are
consumed again, and a transaction left open is aborted by the broker when the next producer of
its transactional id starts (or after its timeout).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

log = logging.getLogger("metrobus.shutdown")

DEADLINE_EXIT_CODE = 3


class ShutdownDeadline:
    """Arm once a stop begins; the process ends ``timeout_s`` later unless it ended by itself."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, why: str) -> None:
        """Start counting (only the first call counts)."""
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.timeout_s, self._expired)
            self._timer.daemon = True
            self._timer.name = "metrobus-shutdown-deadline"
            self._timer.start()
        log.info("stopping (%s): this worker ends within %g s (METROBUS_SHUTDOWN_TIMEOUT_S)", why, self.timeout_s)

    def _expired(self) -> None:
        log.critical(
            "the worker did not stop within METROBUS_SHUTDOWN_TIMEOUT_S=%g s: ending it now; what it did not "
            "commit is consumed again, its open transactions are aborted by the broker",
            self.timeout_s,
        )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):  # ending the process matters more than a log handler
                handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(DEADLINE_EXIT_CODE)
