"""Secrets kept out of log records (metrobus_app/config/redaction.py)."""

from __future__ import annotations

import io
import logging

from metrobus_app import Settings, app
from metrobus_app.config.redaction import RedactSecrets, install, redact, settings_secrets
from tables.redis_source import redacted

SASL = "sasl-pa55word-xyz"
TOKEN = "admin-token-0123456789abcdef"


def test_redact_masks_url_passwords_and_the_given_secrets():
    assert redact("cannot reach redis://:pw1@redis:6379/0 now") == "cannot reach redis://:***@redis:6379/0 now"
    assert redact("kafka://user:p%40ss@h:9092;redis://u:x@h") == "kafka://user:***@h:9092;redis://u:***@h"
    assert redact("redis://redis:6379/0, http://127.0.0.1:6066/") == "redis://redis:6379/0, http://127.0.0.1:6066/"
    assert redact(f"login with {SASL} failed", [SASL]) == "login with *** failed"
    assert redact("a b", ["a"]) == "a b"  # too short to mask without masking everything
    assert redact(redacted("redis://:pw1@redis:6379/0")) == "redis://:***@redis:6379/0"


def test_settings_secrets_are_the_sasl_password_url_passwords_and_the_token():
    settings = Settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_username="bus",
        sasl_password=SASL,
        redis_url="redis://:redis-pw-1@redis:6379/0",
    )
    assert sorted(settings_secrets(settings, TOKEN)) == sorted([SASL, "redis-pw-1", TOKEN])
    assert settings_secrets(Settings()) == []


def _capture(logger_name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_the_filter_redacts_message_arguments_and_tracebacks():
    logger, stream = _capture("test.redaction.filter")
    logger.addFilter(RedactSecrets([SASL, TOKEN]))
    logger.info("sasl %s token %r url %s", SASL, TOKEN, "redis://:pw9@r:1/0")
    try:
        raise RuntimeError(f"auth failed for password {SASL}")
    except RuntimeError:
        logger.exception("broker said no to %s", SASL)
    text = stream.getvalue()
    assert SASL not in text and TOKEN not in text and "pw9" not in text, text
    assert "sasl *** token '***' url redis://:***@r:1/0" in text
    assert "RuntimeError: auth failed for password ***" in text


def test_the_app_redacts_every_record_of_every_logger_from_its_creation():
    # The app was created with the test settings; a secret added later is redacted by every logger at once.
    assert app is not None
    install([SASL])
    logger, stream = _capture("some.library.deep.inside")
    logger.warning("connecting with password=%s", SASL)
    logger.warning("redis at redis://default:rpw-42@cache:6379")
    text = stream.getvalue()
    assert SASL not in text and "rpw-42" not in text
    assert "password=***" in text and "redis://default:***@cache:6379" in text


def test_dead_letters_and_stats_do_not_carry_a_configured_secret():
    from metrobus_app.observe.stats import _letter
    from metrobus_app.wire.letters import letter

    install([SASL])
    body = letter("AddEmail", RuntimeError(f"login as bus:{SASL} refused"), b"{}", 1.0, topic="AddEmail")
    assert body["message"] == "login as bus:*** refused"
    assert _letter(1.0, "AddEmail", "RuntimeError", f"redis://:{SASL}@r and {SASL}", None, None)["message"] == (
        "redis://:***@r and ***"
    )
