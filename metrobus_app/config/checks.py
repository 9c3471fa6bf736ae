"""Checks of the settings' values: a combination that cannot be what was meant is a ``ConfigError``.

``Settings.from_env`` runs them all, so a worker or command stops with one line naming the
variables instead of running with what its operator did not ask for. No message carries a
password or the admin token.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from metrobus_app.errors import ConfigError

if TYPE_CHECKING:
    from metrobus_app.config.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
AT_LEAST_ONCE, EXACTLY_ONCE = "at_least_once", "exactly_once"
GUARANTEES = (AT_LEAST_ONCE, EXACTLY_ONCE)
MODES = ("writes", "all")
TRACING = ("off", "on")
SWITCH = ("on", "off")
MIN_TOKEN_CHARS = 16
ENABLE = "set METROBUS_ADMIN_TOKEN (or METROBUS_ADMIN_TOKEN_FILE) and restart the worker"


def check(settings: Settings) -> None:
    """Every check below, in turn."""
    check_security(settings)
    check_guarantee(settings)
    check_web_auth(settings)
    check_retry(settings)
    check_tracing(settings)


def check_tracing(settings: Settings) -> None:
    """Tracing is on or off; the sample ratio a share between 0 and 1."""
    if settings.tracing not in TRACING:
        raise ConfigError(f"METROBUS_TRACING={settings.tracing!r}: use {' or '.join(TRACING)}")
    if not 0 <= settings.trace_sample_ratio <= 1:
        raise ConfigError(f"METROBUS_TRACE_SAMPLE_RATIO={settings.trace_sample_ratio}: give a share between 0 and 1")


def check_retry(settings: Settings) -> None:
    """The delay tiers must be whole seconds, at least 1, each named once."""
    tiers = settings.retry_delay_tiers
    if (
        not tiers
        or not all(tier.isdigit() and int(tier) >= 1 for tier in tiers)
        or len(set(map(int, tiers))) < len(tiers)
    ):
        given = ",".join(tiers)
        raise ConfigError(
            f"METROBUS_RETRY_DELAY_TIERS={given!r}: give whole seconds of 1 or more, each once (5,30,300)"
        )


def check_security(settings: Settings) -> None:
    """Raise ``ConfigError`` when the TLS/SASL settings do not make one sensible combination."""
    protocol = settings.security_protocol
    if protocol not in PROTOCOLS:
        raise ConfigError(f"METROBUS_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(PROTOCOLS)}")
    uses_sasl = protocol.startswith("SASL_")
    uses_tls = protocol in ("SSL", "SASL_SSL")
    sasl = (("METROBUS_SASL_USERNAME", settings.sasl_username), ("METROBUS_SASL_PASSWORD", settings.sasl_password))
    if uses_sasl:
        if settings.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"METROBUS_SASL_MECHANISM={settings.sasl_mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}"
            )
        missing = [env for env, value in sasl if not value]
        if missing:
            raise ConfigError(f"METROBUS_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}")
    else:
        given = [env for env, value in sasl if value]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} set, but METROBUS_SECURITY_PROTOCOL={protocol} uses no SASL: "
                "use SASL_SSL (or SASL_PLAINTEXT)"
            )
    files = (
        ("METROBUS_SSL_CAFILE", settings.ssl_cafile),
        ("METROBUS_SSL_CERTFILE", settings.ssl_certfile),
        ("METROBUS_SSL_KEYFILE", settings.ssl_keyfile),
    )
    if not uses_tls:
        given = [env for env, value in files if value]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} set, but METROBUS_SECURITY_PROTOCOL={protocol} uses no TLS: use SSL or SASL_SSL"
            )
        return
    if settings.ssl_keyfile and not settings.ssl_certfile:
        raise ConfigError("METROBUS_SSL_KEYFILE set without METROBUS_SSL_CERTFILE, the certificate it belongs to")
    for env, path in files:
        if path and not os.path.isfile(path):
            raise ConfigError(f"{env}={path!r} is not a file")
    ssl_context(settings)  # the files must also be what they claim to be: PEM, a key that fits


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context that verifies the broker (hostname included) against the CA file or the system's CAs."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ssl_cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"METROBUS_SSL_CAFILE={settings.ssl_cafile!r} is not a readable PEM CA bundle ({exc})"
        ) from None
    if settings.ssl_certfile:
        try:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"METROBUS_SSL_CERTFILE={settings.ssl_certfile!r} (with METROBUS_SSL_KEYFILE="
                f"{settings.ssl_keyfile!r}) is not a readable PEM certificate and key ({exc})"
            ) from None
    return context


def check_guarantee(settings: Settings) -> None:
    """Refuse an unknown ``METROBUS_PROCESSING_GUARANTEE`` or ``METROBUS_IDEMPOTENCE``, and limits that cannot work."""
    if settings.processing_guarantee not in GUARANTEES:
        raise ConfigError(
            f"METROBUS_PROCESSING_GUARANTEE={settings.processing_guarantee!r}: use {' or '.join(GUARANTEES)}"
        )
    if settings.idempotence not in SWITCH:
        raise ConfigError(f"METROBUS_IDEMPOTENCE={settings.idempotence!r}: use {' or '.join(SWITCH)}")
    for name in ("max_hops", "max_route_stops", "batch_bytes", "commit_interval_ms"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"METROBUS_{name.upper()} must be at least 1")
    if not 1 <= settings.shutdown_timeout_s <= 3600:
        raise ConfigError(f"METROBUS_SHUTDOWN_TIMEOUT_S={settings.shutdown_timeout_s:g}: use 1 to 3600 seconds")


def admin_token(settings: Settings) -> str | None:
    """The configured admin token (from the variable or the file), or None; ``ConfigError`` if unusable."""
    if settings.admin_token and settings.admin_token_file:
        raise ConfigError("set METROBUS_ADMIN_TOKEN or METROBUS_ADMIN_TOKEN_FILE, not both")
    token, where = settings.admin_token, "METROBUS_ADMIN_TOKEN"
    if settings.admin_token_file:
        where = f"METROBUS_ADMIN_TOKEN_FILE={settings.admin_token_file!r}"
        try:
            token = Path(settings.admin_token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where} cannot be read ({type(exc).__name__})") from None
    if not token:
        if settings.admin_token_file:
            raise ConfigError(f"{where} is empty")
        return None
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() or " " in token:
        # Never the token itself in the message.
        raise ConfigError(
            f"the admin token of {where} must be at least {MIN_TOKEN_CHARS} printable ASCII characters without "
            "spaces (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def check_web_auth(settings: Settings) -> None:
    """Raise ``ConfigError`` when the web settings do not make a sensible combination."""
    if settings.web_auth not in MODES:
        raise ConfigError(f"METROBUS_WEB_AUTH={settings.web_auth!r} is not one of {', '.join(MODES)}")
    token = admin_token(settings)
    if settings.web_auth == "all" and token is None:
        raise ConfigError(f"METROBUS_WEB_AUTH=all needs an admin token: {ENABLE}")
    if settings.web_max_body_bytes < 1:
        raise ConfigError("METROBUS_WEB_MAX_BODY_BYTES must be at least 1")
