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

from typing import TYPE_CHECKING, Any

import faust
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import CredentialsT

from metrobus_app.config.checks import check_security, ssl_context

if TYPE_CHECKING:
    from metrobus_app.config.settings import Settings


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
