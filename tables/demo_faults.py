"""Failures the demo makes on purpose, so its dashboard shows retries and compensations.

``DEMO_FLAKY_EVERY=N``: the first contact lookup of every Nth record times out (a passing
failure: AddEmail's retry policy tries again and succeeds). ``DEMO_FAULT_EVERY=N``: the mail
server refuses every Nth record for good (a ``Fault`` at Log: the stops done are compensated).
Both are off (0) unless set; ``./demo.sh`` sets them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any


def _every(name: str) -> int:
    value = os.environ.get(name, "0")
    return int(value) if value.isdigit() else 0


FLAKY_EVERY = _every("DEMO_FLAKY_EVERY")
FAULT_EVERY = _every("DEMO_FAULT_EVERY")
_timed_out: OrderedDict[int, None] = OrderedDict()


def lookup_times_out(record: Any) -> bool:
    """True on the first lookup of every ``DEMO_FLAKY_EVERY``-th record (by its number ``x``: a key or an attribute)."""
    x = record.get("x") if isinstance(record, dict) else getattr(record, "x", None)
    if not FLAKY_EVERY or not isinstance(x, int) or x % FLAKY_EVERY or x in _timed_out:
        return False
    _timed_out[x] = None
    if len(_timed_out) > 10_000:
        _timed_out.popitem(last=False)
    return True


def mail_refused(record: dict) -> bool:
    """True for every ``DEMO_FAULT_EVERY``-th record (by its number ``x``)."""
    x = record.get("x")
    return bool(FAULT_EVERY) and isinstance(x, int) and x % FAULT_EVERY == 1
