"""Log stop: the sink of the demo; a real bus would send the email here."""

import logging

from metrobus_app import stop

log = logging.getLogger(__name__)


@stop("Log")
def log_message(payload: dict) -> dict:
    log.info("delivered: %s", payload)
    return payload
