"""A test-only stop that fails while a switch file exists: ``METROBUS_MODULES=agents,tests.integration.flaky_stops``.

``METROBUS_TEST_FLAKY_FILE`` names the file; while it exists, ``Flaky`` raises (its text is the
error), so its messages are dead-lettered; once it is gone, ``Flaky`` marks the payload and
passes it on. That is "a stop that fails for a while, then is fixed".
"""

import os
from pathlib import Path

from metrobus_app import stop


@stop("Flaky")
def flaky(payload: dict) -> dict:
    switch = os.environ.get("METROBUS_TEST_FLAKY_FILE")
    if switch and Path(switch).exists():
        raise RuntimeError(f"Flaky is broken: {Path(switch).read_text().strip()}")
    payload["flaky_ok"] = True
    return payload
