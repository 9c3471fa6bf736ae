"""Secrets kept out of text: the configured secret values and any ``scheme://user:password@`` URL password.

``install(secrets)`` (called when the app is created) puts ``RedactSecrets`` in front of every
log record the process makes, through the log record factory, so it holds for every logger and
every handler, including those Faust's worker sets up later: the message, its arguments, and
the traceback are redacted before any handler sees them.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable
from typing import Any

MASK = "***"
#: Shorter values are not redacted: masking every "ab" in a log would hide everything and protect nothing.
MIN_SECRET_CHARS = 3
URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s/]+)(?=@)")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret value and every URL password replaced by ``***``."""
    if "://" in text:
        text = URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_CHARS and secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactSecrets(logging.Filter):
    """A logging filter that redacts secrets from a record's message and traceback (never drops a record)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        self.secrets.update(s for s in secrets if s and len(s) >= MIN_SECRET_CHARS)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted stays as it is: logging reports it
            return True
        cleaned = redact(message, self.secrets)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


_filter = RedactSecrets()
_installed = False


def redact_known(text: str) -> str:
    """``text`` without the secrets installed so far (for dead letters and stats: what stops raise)."""
    return redact(text, _filter.secrets)


def install(secrets: Iterable[str]) -> RedactSecrets:
    """Redact ``secrets`` (and URL passwords) from every log record of this process from now on."""
    global _installed
    _filter.add(secrets)
    if not _installed:
        make = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            _filter.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
    return _filter


def settings_secrets(settings: Any, admin_token: str | None = None) -> list[str]:
    """The secret values in these settings: the SASL password, URL passwords, the admin token."""
    from urllib.parse import urlsplit

    found = [settings.sasl_password, admin_token or ""]
    for url in [settings.redis_url, *settings.broker.split(";")]:
        try:
            found.append(urlsplit(url.strip()).password or "")
        except ValueError:
            continue
    return [secret for secret in found if secret]
