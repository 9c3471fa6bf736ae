"""How a worker proves itself to the broker: TLS and SASL settings turned into Faust's ``broker_credentials``.

``METROBUS_SECURITY_PROTOCOL`` picks one of Kafka's four protocols:

==================  =====================================================================
``PLAINTEXT``       no TLS, no SASL (the demo, the tests, a private network); no credentials
``SSL``             TLS; ``METROBUS_SSL_CAFILE`` verifies the broker, an optional client
                    certificate (``METROBUS_SSL_CERTFILE``/``_KEYFILE``) for mutual TLS
``SASL_PLAINTEXT``  SASL user and password without TLS: PLAIN sends the password in clear
``SASL_SSL``        SASL over TLS: what a managed Kafka usually asks for
==================  =====================================================================

A combination that cannot be what was meant (a SASL user with ``PLAINTEXT``, a CA file
without TLS, SASL without a password, a file that is not there) is a ``ConfigError``
naming the variables, raised when the settings are read, so the worker stops with one line
instead of connecting without the security its operator asked for. The password is never
part of a message.
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Any

import faust
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import CredentialsT

from .errors import ConfigError

if TYPE_CHECKING:
    from .settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


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


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for these settings: None for PLAINTEXT, else SSL or SASL credentials."""
    check_security(settings)
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    # With an ssl_context SASLCredentials speaks SASL_SSL, without one SASL_PLAINTEXT.
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password,
        mechanism=settings.sasl_mechanism,
        ssl_context=context,
    )


def client_options(settings: Settings) -> dict[str, Any]:
    """The same security as keyword arguments of a plain aiokafka client (``AIOKafkaConsumer(**...)``).

    For the clients metrobus makes itself, outside Faust's producer and consumer: without
    these they would talk PLAINTEXT to a broker that wants TLS or SASL.
    """
    return dict(credentials_to_aiokafka_auth(broker_credentials(settings)))


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
