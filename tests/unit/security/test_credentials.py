"""Broker security: METROBUS_* TLS/SASL settings become Faust's broker_credentials; a password is never shown."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import faust
import pytest

from metrobus_app import ConfigError, Settings, create_app
from metrobus_app.security.credentials import broker_credentials, client_options

ROOT = Path(__file__).resolve().parents[3]
SECRET = "s3cret-Pa55"


def sasl(protocol: str = "SASL_SSL", **extra: str) -> dict[str, str]:
    env = {
        "METROBUS_SECURITY_PROTOCOL": protocol,
        "METROBUS_SASL_MECHANISM": "SCRAM-SHA-512",
        "METROBUS_SASL_USERNAME": "metrobus",
        "METROBUS_SASL_PASSWORD": SECRET,
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A self-signed CA and a client certificate with its key, as PEM files."""
    assert shutil.which("openssl"), "openssl is not installed: apt-get install openssl (.ci/run does it)"
    where = tmp_path_factory.mktemp("pki")
    files = {name: where / f"{name}.pem" for name in ("ca", "ca-key", "client", "client-key")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=metrobus test CA",
        "-keyout", str(files["ca-key"]), "-out", str(files["ca"]),
    )  # fmt: skip
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=metrobus worker",
        "-keyout", str(files["client-key"]), "-out", str(files["client"]),
    )  # fmt: skip
    return files


def test_plaintext_needs_no_credentials():
    settings = Settings.from_env({})
    assert settings.security_protocol == "PLAINTEXT"
    assert broker_credentials(settings) is None
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_gives_sasl_credentials_without_tls(mechanism):
    settings = Settings.from_env(sasl("SASL_PLAINTEXT", METROBUS_SASL_MECHANISM=mechanism))
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == mechanism
    assert (credentials.username, credentials.password) == ("metrobus", SECRET)
    assert credentials.ssl_context is None


def test_sasl_ssl_verifies_the_broker_against_the_ca_file(pki):
    settings = Settings.from_env(sasl(METROBUS_SSL_CAFILE=str(pki["ca"])))
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    context = credentials.ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "metrobus test CA"),),)]
    # What aiokafka gets, for Faust's clients and for metrobus's own (cache loader, warm).
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "metrobus"
    assert options["sasl_plain_password"] == SECRET
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_sasl_ssl_without_a_ca_file_trusts_the_system_cas():
    credentials = broker_credentials(Settings.from_env(sasl()))
    assert credentials.ssl_context is not None
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_ssl_with_a_client_certificate_for_mutual_tls(pki):
    settings = Settings.from_env(
        {
            "METROBUS_SECURITY_PROTOCOL": "SSL",
            "METROBUS_SSL_CAFILE": str(pki["ca"]),
            "METROBUS_SSL_CERTFILE": str(pki["client"]),
            "METROBUS_SSL_KEYFILE": str(pki["client-key"]),
        }
    )
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED
    assert client_options(settings)["security_protocol"] == "SSL"


def test_the_app_gets_the_credentials():
    app = create_app(Settings.from_env({**sasl("SASL_PLAINTEXT"), "METROBUS_STORE": "memory://"}))
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert create_app(Settings(store="memory://")).conf.broker_credentials is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"METROBUS_SECURITY_PROTOCOL": "TLS"}, "METROBUS_SECURITY_PROTOCOL='TLS' is not one of PLAINTEXT, SSL"),
        ({"METROBUS_SECURITY_PROTOCOL": "sasl_ssl"}, "is not one of"),
        (sasl(METROBUS_SASL_MECHANISM="GSSAPI"), "METROBUS_SASL_MECHANISM='GSSAPI' is not one of PLAIN, SCRAM"),
        (sasl(METROBUS_SASL_PASSWORD=""), "SASL_SSL needs METROBUS_SASL_PASSWORD"),
        (
            {"METROBUS_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "needs METROBUS_SASL_USERNAME and METROBUS_SASL_PASSWORD",
        ),
        (sasl("PLAINTEXT"), "METROBUS_SASL_USERNAME and METROBUS_SASL_PASSWORD set, but .*=PLAINTEXT uses no SASL"),
        (sasl("SSL"), "=SSL uses no SASL: use SASL_SSL"),
        ({"METROBUS_SSL_CAFILE": "/etc/ca.pem"}, "METROBUS_SSL_CAFILE set, but .*=PLAINTEXT uses no TLS"),
        (sasl("SASL_PLAINTEXT", METROBUS_SSL_CERTFILE="/c.pem"), "=SASL_PLAINTEXT uses no TLS: use SSL or SASL_SSL"),
        (sasl(METROBUS_SSL_CAFILE="/no/such/ca.pem"), "METROBUS_SSL_CAFILE='/no/such/ca.pem' is not a file"),
        (sasl(METROBUS_SSL_KEYFILE="/k.pem"), "METROBUS_SSL_KEYFILE set without METROBUS_SSL_CERTFILE"),
    ],
)
def test_a_bad_combination_is_one_clear_config_error(env, says):
    with pytest.raises(ConfigError, match=says) as raised:
        Settings.from_env(env)
    assert SECRET not in str(raised.value)


def test_a_ca_file_that_is_not_pem_is_a_config_error(tmp_path):
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"METROBUS_SSL_CAFILE=.* is not a readable PEM CA bundle") as raised:
        Settings.from_env(sasl(METROBUS_SSL_CAFILE=str(garbage)))
    assert SECRET not in str(raised.value)


def test_a_key_that_does_not_fit_the_certificate_is_a_config_error(pki):
    env = {
        "METROBUS_SECURITY_PROTOCOL": "SSL",
        "METROBUS_SSL_CERTFILE": str(pki["client"]),
        "METROBUS_SSL_KEYFILE": str(pki["ca-key"]),
    }
    with pytest.raises(ConfigError, match=r"METROBUS_SSL_CERTFILE=.* is not a readable PEM certificate and key"):
        Settings.from_env(env)
    # Settings made without from_env are checked again when the credentials are built.
    with pytest.raises(ConfigError, match="is not a readable PEM certificate and key"):
        broker_credentials(
            Settings(security_protocol="SSL", ssl_certfile=str(pki["client"]), ssl_keyfile=str(pki["ca-key"]))
        )


def test_the_password_is_masked_everywhere_it_could_be_shown():
    settings = Settings.from_env(sasl())
    rows = {env: (value, default) for env, value, default, _ in settings.describe()}
    assert rows["METROBUS_SASL_PASSWORD"] == ("***", "")
    assert rows["METROBUS_SASL_USERNAME"] == ("metrobus", "")
    assert all(SECRET not in value for value, _ in rows.values())
    assert SECRET not in repr(settings)
    assert SECRET not in repr(broker_credentials(settings))
    # Nothing to hide when there is no password: the row stays empty rather than a misleading ***.
    assert dict((env, value) for env, value, *_ in Settings().describe())["METROBUS_SASL_PASSWORD"] == ""


def faust_settings(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "METROBUS_STORE": "memory://", "METROBUS_DATA_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "faust", "-A", "metrobus_app", "settings"],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_settings_command_shows_the_password_as_stars(tmp_path):
    shown = faust_settings(tmp_path, sasl())
    assert shown.returncode == 0, shown.stderr
    assert "METROBUS_SASL_PASSWORD=***" in shown.stdout
    assert "METROBUS_SASL_USERNAME=metrobus" in shown.stdout
    assert "METROBUS_SECURITY_PROTOCOL=SASL_SSL" in shown.stdout
    assert SECRET not in shown.stdout + shown.stderr


def test_a_bad_combination_stops_a_command_with_one_line(tmp_path):
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    for env, says in (
        (sasl("PLAINTEXT"), "metrobus: METROBUS_SASL_USERNAME and METROBUS_SASL_PASSWORD set, but"),
        (sasl(METROBUS_SSL_CAFILE=str(garbage)), "metrobus: METROBUS_SSL_CAFILE="),
    ):
        shown = faust_settings(tmp_path, env)
        assert shown.returncode != 0
        assert shown.stderr.strip().startswith(says), shown.stderr
        assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr
        assert SECRET not in shown.stdout + shown.stderr
