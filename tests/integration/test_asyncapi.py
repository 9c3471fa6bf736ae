"""The AsyncAPI document of a running bus: the routes in use are the ones stored in the bus.

``faust -A metrobus_app asyncapi`` reads the stored rules from the broker (as ``routes list``
does); ``--offline`` describes the rules file's; a worker's ``/metrobus/asyncapi.json`` shows
the rules it routes by. Each document validates against the AsyncAPI 3.0.0 schema.
"""

from __future__ import annotations

import json

import pytest

from tests.unit.routing.test_asyncapi import VALIDATOR

from .conftest import bus_env, run_cli

pytestmark = pytest.mark.integration


def routes_of(document: dict) -> dict:
    errors = sorted(VALIDATOR.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    return document["x-metrobus-routes"]


def test_the_document_names_the_routes_stored_in_the_bus_and_offline_the_rules_file_s(broker, workers, tmp_path):
    env = bus_env(broker.url, tmp_path / "cli")
    worker = workers().wait_ready()
    assert routes_of(worker.get("/metrobus/asyncapi.json"))["source"] == "file"

    changed = run_cli(env, "routes", "default", "AddEmail,Log")
    assert changed.returncode == 0, changed.stderr
    out = tmp_path / "asyncapi.json"
    written = run_cli(env, "asyncapi", "--out", str(out))
    assert written.returncode == 0, written.stderr
    stored = routes_of(json.loads(out.read_text()))
    assert (stored["source"], stored["revision"], stored["default"]) == ("bus", 1, ["AddEmail", "Log"])
    assert "audit" in stored["rules"]

    offline = run_cli(env, "asyncapi", "--offline")
    assert offline.returncode == 0, offline.stderr
    from_file = routes_of(json.loads(offline.stdout))
    assert (from_file["source"], from_file["revision"]) == ("file", 0)
    assert from_file["default"] != ["AddEmail", "Log"]

    worker.wait_for("/metrobus/asyncapi.json", lambda doc: doc["x-metrobus-routes"].get("revision") == 1, 10)
    assert routes_of(worker.get("/metrobus/asyncapi.json"))["default"] == ["AddEmail", "Log"]
