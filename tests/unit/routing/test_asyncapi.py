"""The bus as an AsyncAPI 3.0.0 document: valid, and every stop, message and route in it.

``asyncapi-3.0.0.schema.json`` beside this file is the published AsyncAPI 3.0.0 JSON Schema,
``schemas/3.0.0-without-$id.json`` of the npm package ``@asyncapi/specs`` 6.11.1 (Apache-2.0,
https://github.com/asyncapi/spec-json-schemas), vendored as it is (``npm pack @asyncapi/specs``)
so that the tests download nothing. The ``-without-$id`` variant has only local references,
which ``jsonschema`` resolves without a network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from metrobus_app import Retry, Settings, bus, create_app
from metrobus_app.routing.asyncapi import asyncapi_document
from metrobus_app.routing.rule_set import RouteRules
from metrobus_app.web.views import AsyncAPIView

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads(Path(__file__).with_name("asyncapi-3.0.0.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def assert_valid(document: dict[str, Any]) -> None:
    errors = [f"{error.json_path}: {error.message[:300]}" for error in VALIDATOR.iter_errors(document)]
    assert not errors, "\n".join(errors)
    for ref in refs(document):  # every reference points into the document itself, and at something
        assert ref.startswith("#/"), ref
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]


def refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in refs(item)]
    return []


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].removeprefix("#/components/schemas/")]
    return schema


def payload_of(document: dict[str, Any], topic: str) -> dict[str, Any]:
    [message] = document["channels"][topic]["messages"].values()
    return message["payload"]


def test_the_validator_refuses_what_asyncapi_3_does_not_allow():
    assert not VALIDATOR.is_valid({"asyncapi": "3.0.0", "info": {"title": "x", "version": "1"}, "nonsense": 1})
    assert not VALIDATOR.is_valid(
        {"asyncapi": "3.0.0", "info": {"title": "x", "version": "1"}, "operations": {"o": {"action": "post"}}}
    )
    assert VALIDATOR.is_valid({"asyncapi": "3.0.0", "info": {"title": "x", "version": "1"}})


def test_the_demo_bus_is_a_valid_document_with_every_stop_message_and_route(test_app):
    document = asyncapi_document(bus)
    assert_valid(document)
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == bus.settings.app_id
    assert document["servers"]["broker"] == {
        "host": "localhost:9092",
        "protocol": "kafka",
        "description": "The Kafka broker kafka://localhost:9092.",
    }
    channels, operations = document["channels"], document["operations"]
    for stop in bus.stops:
        assert channels[stop]["address"] == stop
        envelope = payload_of(document, stop)
        assert envelope["required"] == ["header", "payload"]
        assert envelope["properties"]["header"] == {"$ref": "#/components/schemas/Header"}
        assert operations[f"{stop}.receive"]["action"] == "receive"
        assert operations[f"{stop}.receive"]["channel"] == {"$ref": f"#/channels/{stop}"}
    assert operations["busdriver.receive"]["channel"] == {"$ref": "#/channels/Source"}
    assert operations["Error.send"] == {
        "action": "send",
        "channel": {"$ref": "#/channels/Error"},
        "summary": operations["Error.send"]["summary"],
        "messages": [{"$ref": "#/channels/Error/messages/deadLetter"}],
    }
    assert payload_of(document, "Error") == {"$ref": "#/components/schemas/DeadLetter"}
    for topic in bus.recovery.delay_topics():  # the demo's stops retry: its delay topics are there
        assert f"{topic}.receive" in operations and channels[topic]["address"] == topic

    header = document["components"]["schemas"]["Header"]["properties"]
    assert set(header) >= {
        *("route", "original_route", "historical_route", "id", "stamped_at", "hops"),
        *("max_hops", "replays", "fanout", "original_fanout", "copy", "route_edits"),
        *("attempts", "retry", "deadline", "compensate", "compensating", "trace"),
    }
    letter = document["components"]["schemas"]["DeadLetter"]["properties"]
    assert set(letter) >= {"stop", "error", "message", "value", "id", "topic", "replays", "replayable", "fields"}
    assert set(letter) >= {"trace_id", "compensated", "not_undone", "failed_at"}

    rules = RouteRules.of(bus)
    assert rules is not None
    in_use = rules.active().document
    routes = document["x-metrobus-routes"]
    assert (routes["source"], routes["default"]) == ("file", in_use["default"])
    assert list(routes["rules"]) == [rule["name"] for rule in in_use["rules"]]
    for rule in in_use["rules"]:
        assert routes["rules"][rule["name"]]["route"] == rule["route"]
        assert routes["rules"][rule["name"]]["match"] == rule["match"]


class Address(BaseModel):
    street: str
    city: str


class Account(BaseModel):
    account_number: int
    address: Address | None = None


class Contact(Account):
    email: str


class Record(TypedDict):
    account_number: int


@pytest.fixture()
def typed_bus(tmp_path: Path):
    app = create_app(
        Settings(app_id="unit-asyncapi", store="memory://", external_stops=("Archive",), broker="kafka://a:9092;b:9093")
    )
    bus = app.bus

    @bus.stop("AddEmail", retry=Retry(attempts=3))
    def add_email(account: Account) -> Contact:
        return Contact(**account.model_dump(), email="a@example.com")

    @bus.stop("Log")
    def log(payload: dict) -> dict:
        return payload

    @bus.busdriver()
    def route(record: Record) -> list[str]:
        return ["AddEmail", "Log"]

    file = tmp_path / "routes.toml"
    file.write_text(
        'default = ["AddEmail", "Log"]\n'
        '[[rules]]\nname = "archive"\nmatch = { kind = "old" }\nroute = ["AddEmail", "Archive+Log"]\n'
        'description = "Old records are archived too."\ndeadline_s = 30\n'
    )
    RouteRules.declare(bus, file)
    return bus


def test_a_typed_stops_payload_schema_is_its_models_with_the_defs_in_components(typed_bus):
    document = asyncapi_document(typed_bus)
    assert_valid(document)
    schemas = document["components"]["schemas"]
    payload = payload_of(document, "AddEmail")["properties"]["payload"]
    assert payload == {"$ref": "#/components/schemas/Account"}
    model = Account.model_json_schema()
    defs = model.pop("$defs")
    assert schemas["Account"] == json.loads(json.dumps(model).replace("#/$defs/", "#/components/schemas/"))
    assert schemas["Address"] == defs["Address"]
    assert "$defs" not in json.dumps(document)
    # The busdriver's record type on Source, an untyped stop and an external stop as plain objects.
    assert resolve(document, payload_of(document, "Source"))["properties"] == {
        "account_number": {"title": "Account Number", "type": "integer"}
    }
    assert payload_of(document, "Log")["properties"]["payload"] == {"type": "object"}
    assert payload_of(document, "Archive")["properties"]["payload"] == {"type": "object"}
    assert "Archive.receive" not in document["operations"]  # another app's stop: this one does not receive it
    assert {"AddEmail.receive", "Log.receive", "busdriver.receive", "Error.send"} <= set(document["operations"])
    assert [name for name in document["channels"] if "-retry-" in name] == typed_bus.recovery.delay_topics()
    assert document["servers"] == {
        "broker-1": {"host": "a:9092", "protocol": "kafka", "description": "The Kafka broker kafka://a:9092."},
        "broker-2": {"host": "b:9093", "protocol": "kafka", "description": "The Kafka broker b:9093."},
    }
    assert document["x-metrobus-routes"] == {
        "source": "file",
        "revision": 0,
        "default": ["AddEmail", "Log"],
        "rules": {
            "archive": {
                "match": {"kind": "old"},
                "route": ["AddEmail", "Archive+Log"],
                "description": "Old records are archived too.",
                "deadline_s": 30,
            }
        },
    }


def test_two_models_of_one_name_keep_their_own_schemas():
    app = create_app(Settings(app_id="unit-asyncapi-names", store="memory://"))

    def model(field: str) -> type[BaseModel]:
        return type("Item", (BaseModel,), {"__annotations__": {field: int}})

    for stop, field in (("One", "a"), ("Two", "b")):

        def run(item: Any) -> None:
            return None

        run.__annotations__ = {"item": model(field), "return": None}  # a local class: no string annotation
        app.bus.stop(stop)(run)

    document = asyncapi_document(app.bus)
    assert_valid(document)
    schemas = document["components"]["schemas"]
    assert payload_of(document, "One")["properties"]["payload"] == {"$ref": "#/components/schemas/Item"}
    assert payload_of(document, "Two")["properties"]["payload"] == {"$ref": "#/components/schemas/Item_2"}
    assert (set(schemas["Item"]["properties"]), set(schemas["Item_2"]["properties"])) == ({"a"}, {"b"})


def test_a_bus_without_route_rules_says_its_busdriver_routes():
    app = create_app(Settings(app_id="unit-asyncapi-plain", store="memory://"))
    app.bus.stop("Log")(lambda payload: payload)
    document = asyncapi_document(app.bus)
    assert_valid(document)
    assert document["x-metrobus-routes"] == {"source": "busdriver"}
    assert payload_of(document, "Source") == {"type": "object"}  # no busdriver here: records of no known type
    assert not [name for name in document["channels"] if "-retry-" in name]  # no stop retries: no delay topic


async def test_the_web_view_answers_with_the_document(test_app):
    answer = await AsyncAPIView(test_app, test_app.web).get(None)
    assert answer.status == 200
    assert json.loads(answer.body) == json.loads(json.dumps(asyncapi_document(bus)))


def asyncapi_command(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "METROBUS_STORE": "memory://", "METROBUS_DATA_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "faust", "-A", "metrobus_app", "asyncapi", "--offline", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_writes_the_document_to_a_file_and_prints_it_without_one(tmp_path):
    out = tmp_path / "asyncapi.json"
    written = asyncapi_command(tmp_path, "--out", str(out))
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    document = json.loads(out.read_text(encoding="utf-8"))
    assert_valid(document)
    assert {"AddEmail", "WhiteList", "Log", "Source", "Error"} <= set(document["channels"])
    assert document["x-metrobus-routes"]["default"] == ["AddEmail", "WhiteList", "Log"]

    printed = asyncapi_command(tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == document
