"""Log stop: the sink of the demo; a real bus would send the email here."""

import logging

from metrobus_app import Fault, stop
from tables.demo_faults import mail_refused

log = logging.getLogger(__name__)


@stop("Log")
def log_message(payload: dict) -> dict:
    if mail_refused(payload):
        raise Fault("the mail server refused the message (the demo's DEMO_FAULT_EVERY)")
    log.info("delivered: %s", payload)
    return payload
