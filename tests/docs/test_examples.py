"""Every code example of the docs is a file in docs/examples/, and each is imported or run here.

The Python examples are written against the default app (``from metrobus_app import stop``);
each is loaded here on a bus of its own, so they neither clash with the demo's stops nor leave
anything on the default app.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

import metrobus_app
from metrobus_app import Drop, Envelope, Route, Settings, create_app
from tables import whitelist
from tables.files import WHITELISTED

try:
    from metrobus_app.routing.language import compile_rules, load_file
except ImportError:  # before the package was layered
    from metrobus_app.rules import compile_rules, load_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
DOCS = ROOT / "docs"
DEMO_STOPS = {"AddEmail", "WhiteList", "Log"}


@pytest.fixture()
def own_bus(monkeypatch):
    """A bus of a fresh app, standing in for the default one while an example is imported."""
    settings = Settings(
        store="memory://", external_stops=("AddEmail", "WhiteList", "Log", "ManualReview", "Review", "Archive")
    )
    bus = create_app(settings).bus
    monkeypatch.setattr(metrobus_app, "bus", bus, raising=False)
    monkeypatch.setattr(metrobus_app, "stop", bus.stop, raising=False)
    monkeypatch.setattr(metrobus_app, "busdriver", bus.busdriver, raising=False)
    return bus


def load_example(name: str) -> ModuleType:
    """Import ``docs/examples/<name>`` as a module of its own (not kept in ``sys.modules``)."""
    path = EXAMPLES / name
    spec = importlib.util.spec_from_file_location(f"docs_example_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exports(name: str) -> dict[str, str]:
    """The variables a shell example (``docs/examples/<name>``) exports, by name."""
    found = {}
    for line in (EXAMPLES / name).read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            variable, value = words[1].split("=", 1)
            found[variable] = value
    return found


# --- every example is used by a page, and every snippet a page includes exists --------------


def included_snippets() -> set[str]:
    found = set()
    for page in DOCS.rglob("*.md"):
        found |= set(re.findall(r'^--8<-- "docs/examples/([^"]+)"$', page.read_text(), flags=re.M))
    return found


def test_every_example_is_included_in_a_page_and_every_included_one_exists():
    examples = {path.name for path in EXAMPLES.iterdir() if path.is_file()}
    assert included_snippets() == examples


def test_the_readme_shows_the_complete_stop_of_the_docs_as_it_is():
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{(EXAMPLES / 'whitelist.py').read_text()}```" in readme


def test_the_readme_gives_the_two_commands_of_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert f"```sh\n{(EXAMPLES / 'two_commands.sh').read_text()}```" in readme


# --- Python -----------------------------------------------------------------------------------


@pytest.fixture()
def whitelisted():
    """The demo's whitelist cache, in memory, holding one whitelisted email."""
    store = whitelist.open("memory://", Path("unused"))
    store.apply([(b"ann@example.com", WHITELISTED.encode())], offset=0)
    whitelist.ready.set()
    yield "ann@example.com"
    whitelist.close()
    whitelist.ready.clear()


def test_the_complete_stop_lets_whitelisted_emails_through_and_drops_the_rest(own_bus, whitelisted):
    example = load_example("whitelist.py")
    assert own_bus.stops["WhiteList"] is example.check_whitelist
    assert example.check_whitelist({"email": whitelisted, "x": 1}) == {"email": whitelisted, "x": 1, "whitelist": True}
    with pytest.raises(Drop, match="email not whitelisted"):
        example.check_whitelist({"email": "bob@example.com"})
    with pytest.raises(Drop):
        example.check_whitelist({})


def test_the_seed_busdriver_routes_audit_records_past_the_whitelist(own_bus):
    example = load_example("seed_busdriver.py")
    assert "busdriver" in own_bus.agents
    assert example.route({"message_type_code": "AUDIT"}) == ["AddEmail", "Log"]
    assert example.route({"message_type_code": "ALTABC"}) == ["AddEmail", "WhiteList", "Log"]
    assert example.route({}) == ["AddEmail", "WhiteList", "Log"]


async def test_the_busdriver_with_rules_routes_by_the_rules_file_beside_it(own_bus):
    example = load_example("rules_busdriver.py")
    assert example.rules.file == EXAMPLES / "routes.toml"
    example.rules.cache.open("memory://", Path("unused"))  # nothing stored in the bus: the file's rules apply
    example.rules.cache.ready.set()
    try:
        assert list(await example.route({"message_type_code": "AUDIT"})) == ["AddEmail", "Log"]
        assert list(await example.route({"message_type_code": "ALTABC"})) == ["AddEmail", "WhiteList", "Log"]
        assert example.rules.source == "file"
    finally:
        example.rules.cache.close()


def test_the_fraud_stop_detours_large_amounts_to_manual_review(own_bus):
    example = load_example("fraud.py")
    assert own_bus.stops["Fraud"] is example.check

    def route_after(payload: dict) -> list:
        envelope = Envelope.stamp(payload, ["Fraud", "Log"])
        envelope.pop_next()
        route = Route(envelope, "Fraud", lambda: own_bus.known_stops)
        assert example.check(payload, route) is payload
        return list(route.ahead)

    assert route_after({"amount": 50_000}) == ["ManualReview", "Log"]
    assert route_after({"amount": 10_000}) == ["Log"]


# --- rules files, the wire format ---------------------------------------------------------------


def test_the_rules_file_of_the_routing_page_is_the_demos_and_gives_its_routes():
    rules = compile_rules(load_file(EXAMPLES / "routes.toml"), DEMO_STOPS)
    demo = compile_rules(load_file(ROOT / "agents" / "routes.toml"), DEMO_STOPS)
    assert rules.document["default"] == demo.document["default"]
    assert [(r["name"], r["match"], r["route"]) for r in rules.document["rules"]] == [
        (r["name"], r["match"], r["route"]) for r in demo.document["rules"]
    ]
    assert list(rules.route_for({"message_type_code": "AUDIT"})) == ["AddEmail", "Log"]
    assert rules.rule_for({"message_type_code": "ALTABC"}) == "default"


def test_the_larger_rules_file_matches_ranges_and_sets_and_fans_out():
    rules = compile_rules(load_file(EXAMPLES / "big_rules.toml"), DEMO_STOPS | {"Review", "Archive"})
    big = {"amount": 5000, "customer": {"country": "BE"}}
    assert rules.rule_for(big) == "big"
    assert list(rules.route_for(big)) == ["Review", "AddEmail", "Log"]
    assert rules.rule_for({"amount": 999, "customer": {"country": "BE"}}) == "default"
    assert rules.rule_for({"amount": 5000, "customer": {"country": "DE"}}) == "default"
    assert rules.rule_for({"amount": 5000, "message_type_code": "AUDIT"}) == "audit"
    *_, fan_out = rules.route_for({"message_type_code": "AUDIT"})
    assert set(fan_out) == {"Log", "Archive"}


def test_the_rules_files_name_only_stops_the_rule_language_accepts():
    with pytest.raises(Exception, match="Archive"):
        compile_rules(load_file(EXAMPLES / "big_rules.toml"), DEMO_STOPS | {"Review"})


def test_the_wire_format_example_is_an_envelope_on_its_way_to_whitelist():
    raw = (EXAMPLES / "envelope.json").read_bytes()
    envelope = Envelope.from_bytes(raw)
    assert envelope.next_stop == "WhiteList"
    assert envelope.header["historical_route"] == ["AddEmail"]
    assert envelope.payload == json.loads(raw)["payload"]


# --- shell examples -------------------------------------------------------------------------------

SHELL = sorted(path.name for path in EXAMPLES.glob("*.sh"))


@pytest.mark.parametrize("name", SHELL)
def test_a_shell_example_is_valid_bash(name):
    result = subprocess.run(["bash", "-n", str(EXAMPLES / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def commands_of(name: str) -> list[list[str]]:
    """The words of each ``faust -A metrobus_app ...`` command of a shell example, after the app."""
    found = []
    for line in (EXAMPLES / name).read_text().replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        for at in range(len(words) - 2):
            if words[at : at + 3] == ["faust", "-A", "metrobus_app"]:
                found.append(words[at + 3 :])
    return found


FAUST_COMMANDS = [(name, words) for name in SHELL for words in commands_of(name)]


def test_the_shell_examples_use_the_commands():
    assert len(FAUST_COMMANDS) >= 20
    assert {words[0] for _, words in FAUST_COMMANDS} >= {"worker", "routes", "reconcile", "deadletters", "warm"}


@pytest.fixture(scope="module")
def command_help():
    """``--help`` of each command the shell examples run, from the real command line, once."""
    seen: dict[tuple[str, ...], str] = {}
    for _, words in FAUST_COMMANDS:
        command = (words[0], words[1]) if words[0] in {"routes", "deadletters"} else (words[0],)
        if command not in seen:
            result = subprocess.run(
                [str(ROOT / ".venv" / "bin" / "faust"), "-A", "metrobus_app", *command, "--help"],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=120,
            )
            assert result.returncode == 0, (command, result.stderr[-2000:])
            seen[command] = result.stdout
    return seen


@pytest.mark.parametrize(("name", "words"), FAUST_COMMANDS, ids=[" ".join(w[:2]) for _, w in FAUST_COMMANDS])
def test_every_option_of_a_shell_example_is_an_option_of_its_command(name, words, command_help):
    command = (words[0], words[1]) if words[0] in {"routes", "deadletters"} else (words[0],)
    options = {word.strip("[]").split("=")[0] for word in words if word.strip("[]").startswith("-")}
    for option in options:
        assert re.search(rf"(^|[\s,]){re.escape(option)}\b", command_help[command]), (name, command, option)


# --- the demo's output ----------------------------------------------------------------------------


def test_the_demo_output_of_the_docs_is_what_the_demo_runner_prints():
    runner = (ROOT / "scripts" / "demo.py").read_text()
    first, *middle, last = (EXAMPLES / "demo_output.txt").read_text().splitlines()
    assert first in runner
    assert last in runner
    assert len(middle) == 6
    for line in middle:
        prefix, value = re.fullmatch(r"(\s+[\w ]+:\s+)(\S+)", line).groups()
        if value.startswith("http://127.0.0.1:6066/metrobus/"):
            tail = value.removeprefix("http://127.0.0.1:6066/metrobus/").rstrip("0123456789")
            assert f'"{prefix}{{url}}{tail}' in runner, line
        else:
            assert f'"{prefix}{{worker_log}}"' in runner, line
