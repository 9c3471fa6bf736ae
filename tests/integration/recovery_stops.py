"""Stops that only the recovery tests run: ``METROBUS_MODULES=agents,tests.integration.recovery_stops``.

None of them reads a cache. What they did is written to ``METROBUS_TEST_RECOVERY_DIR`` (when set),
so a test sees it from outside and it survives a kill -9 of the worker:

- ``Twice`` fails the first two attempts of every message with ``TimeoutError`` (a passing
  error, retried in place: a 10 ms wait), then passes it on marked ``twice_tries``.
- ``Later`` fails the first attempt of a message with ``ConnectionError`` when its payload has
  ``fail_once`` (or every message when ``METROBUS_TEST_FAIL_ONCE=all``, every N-th pushed record with
  ``every:N``); its retry waits
  ``METROBUS_TEST_LATER_WAIT_S`` (1.5 s by default, no jitter): longer than the in-place
  limit, so the message goes through a delay topic. A marker file per message says it failed.
- ``Reserve`` -> ``Charge`` -> ``Ship``: a shop. ``Reserve`` remembers its hold and may take
  ``slow_s`` seconds; ``Charge`` remembers nothing; both can be undone, each undo appends a
  line to ``undone.log``. ``Ship`` raises ``Fault`` when the payload says ``ship: fault``;
  ``Charge``'s undo raises when the payload says ``refund_fails``.
- ``Done``: a sink.
"""

import asyncio
import json
import os
import time
from pathlib import Path

from metrobus_app import Fault, Retry, remember, stop
from metrobus_app.core.retry import fixed

RECORDS = Path(os.environ["METROBUS_TEST_RECOVERY_DIR"]) if os.environ.get("METROBUS_TEST_RECOVERY_DIR") else None
LATER_WAIT_S = float(os.environ.get("METROBUS_TEST_LATER_WAIT_S", "1.5"))

_tries: dict[str, int] = {}


def _name(payload: dict) -> str:
    return str(payload.get("n", payload.get("x")))


def _note(line: dict) -> None:
    if RECORDS is not None:
        with open(RECORDS / "undone.log", "a") as log:
            log.write(json.dumps({**line, "time": time.time(), "pid": os.getpid()}) + "\n")


@stop("Twice", retry=Retry(attempts=3, on=(TimeoutError,), backoff=fixed(0.01)))
def twice(payload: dict) -> dict:
    name = _name(payload)
    _tries[name] = _tries.get(name, 0) + 1
    if _tries[name] <= 2:
        raise TimeoutError(f"lookup timed out (try {_tries[name]})")
    return {**payload, "twice_tries": _tries[name]}


def _fails_once(payload: dict) -> bool:
    """``fail_once`` in the payload, or ``METROBUS_TEST_FAIL_ONCE``: ``all``, or ``every:N`` (x a multiple of N)."""
    which = os.environ.get("METROBUS_TEST_FAIL_ONCE", "")
    if payload.get("fail_once") or which == "all":
        return True
    return which.startswith("every:") and int(payload.get("x", 1)) % int(which[6:]) == 0


@stop("Later", retry=Retry(attempts=3, on=(ConnectionError,), backoff=fixed(LATER_WAIT_S)))
def later(payload: dict) -> dict:
    if _fails_once(payload):
        name = _name(payload)
        if RECORDS is not None:
            marker = RECORDS / f"later-{name}.failed"
            if not marker.exists():
                marker.write_text(str(time.time()))
                raise ConnectionError(f"database failing over ({name})")
        elif name not in _tries:
            _tries[name] = 1
            raise ConnectionError(f"database failing over ({name})")
    return {**payload, "later_ok": True}


@stop("Reserve")
async def reserve(payload: dict) -> dict:
    if payload.get("slow_s"):
        await asyncio.sleep(payload["slow_s"])
    remember({"hold": f"hold-{_name(payload)}"})
    return {**payload, "reserved": True}


@reserve.compensate
def release(payload: dict, log: dict) -> None:
    _note({"undo": "Reserve", "n": _name(payload), "log": log})


@stop("Charge", retry=Retry(attempts=2, on=(TimeoutError,), backoff=fixed(0.01)))
def charge(payload: dict) -> dict:
    return {**payload, "charged": True}


@charge.compensate
def refund(payload: dict, log: object) -> None:
    if payload.get("refund_fails"):
        raise RuntimeError("the payment service refuses the refund")
    _note({"undo": "Charge", "n": _name(payload), "log": log})


@stop("Ship")
def ship(payload: dict) -> dict:
    if payload.get("ship") == "fault":
        raise Fault("no carrier for this address")
    return {**payload, "shipped": True}


@stop("Done")
def done(payload: dict) -> dict:
    return payload
