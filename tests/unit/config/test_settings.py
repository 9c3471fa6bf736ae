"""Settings come from METROBUS_* variables with defaults."""

from pathlib import Path

import pytest

from metrobus_app import ConfigError, Settings


def test_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings.broker == "kafka://localhost:9092"
    assert settings.source_topic == "Source"
    assert settings.error_topic == "Error"
    assert settings.external_stops == ()
    assert settings.fetch_wait_ms == 0  # by broker: broker_health.fetch_wait_ms


def test_every_setting_reads_its_variable():
    env = {
        "METROBUS_BROKER": "kafka://k1:9092;kafka://k2:9092",
        "METROBUS_PARTITIONS": "8",
        "METROBUS_DATA_DIR": "/srv/bus",
        "METROBUS_EXTERNAL_STOPS": " Legacy, Audit ,",
        "METROBUS_STOPS": "",
    }
    settings = Settings.from_env(env)
    assert settings.broker == "kafka://k1:9092;kafka://k2:9092"
    assert settings.partitions == 8
    assert settings.data_dir == Path("/srv/bus")
    assert settings.external_stops == ("Legacy", "Audit")
    assert settings.stops == ()


@pytest.mark.parametrize(("value", "says"), [("many", "not a whole number"), ("-1", "must not be negative")])
def test_a_bad_number_names_the_variable(value, says):
    with pytest.raises(ConfigError, match=f"METROBUS_PARTITIONS='{value}' .*{says}"):
        Settings.from_env({"METROBUS_PARTITIONS": value})


def test_describe_lists_every_variable_once():
    rows = Settings().describe()
    names = [row[0] for row in rows]
    assert len(names) == len(set(names))
    assert all(name.startswith("METROBUS_") for name in names)
    assert rows[names.index("METROBUS_ERROR_TOPIC")][:3] == ("METROBUS_ERROR_TOPIC", "Error", "Error")


@pytest.mark.parametrize("env", ["METROBUS_BATCH_BYTES", "METROBUS_COMMIT_INTERVAL_MS", "METROBUS_MAX_HOPS"])
def test_a_limit_of_zero_is_refused_by_name(env):
    with pytest.raises(ConfigError, match=f"^{env} must be at least 1$"):
        Settings.from_env({env: "0"})


def test_an_unknown_event_loop_is_refused_by_name():
    from metrobus_app.application import install_event_loop

    with pytest.raises(ConfigError, match=r"^METROBUS_EVENT_LOOP='trio': use uvloop or asyncio$"):
        install_event_loop(Settings(event_loop="trio"))


def test_idempotence_is_on_or_off():
    assert Settings.from_env({}).idempotence == "on"
    with pytest.raises(ConfigError, match=r"^METROBUS_IDEMPOTENCE='yes': use on or off$"):
        Settings.from_env({"METROBUS_IDEMPOTENCE": "yes"})
