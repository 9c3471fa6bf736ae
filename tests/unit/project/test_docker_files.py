"""The Docker files, read (no Docker engine here): they parse, and say only what the project has.

Every metrobus command in the compose file and the image is a real command of this app with
real options, every METROBUS_* variable they set is a setting, and the image is built the
way the README installs metrobus.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from metrobus_app import Settings
from metrobus_app.brokers.kafka import KAFKA_VERSION, KafkaNode

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_PATH = ROOT / "docker" / "docker-compose.yml"
DOCKERFILE_PATH = ROOT / "docker" / "Dockerfile"
COMPOSE = yaml.safe_load(COMPOSE_PATH.read_text())
SERVICES = COMPOSE["services"]
SETTINGS = {env for env, *_ in Settings().describe()}
BUS_TOPICS = ("Source", "AddEmail", "WhiteList", "Log", "Error")


# --- reading a Dockerfile -------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


DOCKERFILE = instructions(DOCKERFILE_PATH.read_text())


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in DOCKERFILE:
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def image_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def exec_form(rest: str) -> list[str]:
    return yaml.safe_load(rest) if rest.startswith("[") else shlex.split(rest)


# --- reading commands -----------------------------------------------------------------------


def metrobus_commands(command: list[str] | str | None) -> list[list[str]]:
    """Every ``faust -A metrobus_app ...`` in a command, a ``sh -c`` script included, as argv."""
    if command is None:
        return []
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    if argv[:2] in (["sh", "-c"], ["bash", "-c"], ["/bin/sh", "-c"], ["/bin/bash", "-c"]):
        scripts = re.split(r"&&|;|\n|\|\|", argv[2].replace("$$", "$"))
        found = []
        for script in scripts:
            words = shlex.split(script)
            if words[:1] == ["exec"]:
                words = words[1:]
            found += metrobus_commands(words) if words else []
        return found
    if argv[:3] == ["faust", "-A", "metrobus_app"]:
        return [argv]
    return []


def options_of(argv: list[str]) -> list[str]:
    """The options given to the subcommand (``argv[3]``): ``--out``, ``-l`` ..."""
    return [word.split("=", 1)[0] for word in argv[4:] if word.startswith("-")]


@functools.cache
def help_of(subcommand: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METROBUS_")}
    env["METROBUS_STORE"] = "memory://"
    shown = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "metrobus_app", subcommand, "--help"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, f"'faust -A metrobus_app {subcommand}' is not a command:\n{shown.stderr}"
    return shown.stdout


def every_metrobus_command() -> list[tuple[str, list[str]]]:
    found = [(name, argv) for name, service in SERVICES.items() for argv in metrobus_commands(service.get("command"))]
    cmd = [rest for word, rest in stages()[-1] if word == "CMD"]
    found += [("Dockerfile CMD", argv) for argv in metrobus_commands(exec_form(cmd[-1]))]
    return found


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


# --- the compose file -----------------------------------------------------------------------


def test_the_compose_file_has_the_whole_bus():
    assert set(SERVICES) >= {"kafka", "topics", "redis", "warm", "worker", "worker-web", "pusher"}
    assert SERVICES["redis"]["image"].startswith("redis:7")


def test_every_metrobus_command_is_a_real_command_with_real_options():
    found = every_metrobus_command()
    assert {argv[3] for _, argv in found} >= {"worker", "make-data", "warm", "push"}
    for where, argv in found:
        shown = help_of(argv[3])
        for option in options_of(argv):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", shown), f"{where}: {' '.join(argv)}: {option}"


def test_the_demo_commands_are_the_readmes():
    commands = {argv[3]: argv for _, argv in every_metrobus_command()}
    make_data, warm, push = commands["make-data"], commands["warm"], commands["push"]
    out = make_data[make_data.index("--out") + 1]
    assert warm[warm.index("--emails") + 1] == f"{out}/emails.dat"
    assert warm[warm.index("--whitelist") + 1] == f"{out}/whitelist.dat"
    assert {"--count", "--rate"} <= set(options_of(push))
    assert f"{out}" in [volume.split(":")[1] for volume in SERVICES["warm"]["volumes"]]


def test_every_metrobus_variable_is_a_setting():
    for name, service in SERVICES.items():
        for env in service_env(service):
            assert not env.startswith("METROBUS_") or env in SETTINGS, f"{name}: {env} is not a setting"
    for env in image_env(stages()[-1]):
        assert not env.startswith("METROBUS_") or env in SETTINGS, f"Dockerfile: {env} is not a setting"
    # Comments included: a name the files mention must exist too.
    for path in (COMPOSE_PATH, DOCKERFILE_PATH):
        for env in re.findall(r"METROBUS_[A-Z0-9_]+", path.read_text()):
            assert env in SETTINGS, f"{path.name} mentions {env}, which is not a setting"


def test_every_metrobus_service_talks_to_the_same_kafka_with_the_same_partitions():
    metrobus = {name: s for name, s in SERVICES.items() if any(metrobus_commands(s.get("command")))}
    assert set(metrobus) == {"warm", "worker", "worker-web", "pusher"}
    for name, service in metrobus.items():
        env = service_env(service)
        assert env["METROBUS_BROKER"] == "kafka://kafka:29092", name
        assert env["METROBUS_PARTITIONS"] == service_env(SERVICES["topics"])["PARTITIONS"], name
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name
    assert "INTERNAL://kafka:29092" in service_env(SERVICES["kafka"])["KAFKA_ADVERTISED_LISTENERS"]


def test_kafka_runs_in_kraft_mode_and_has_a_health_check():
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = service_env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert not any("ZOOKEEPER" in name for name in env)
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


def test_kafka_is_the_version_the_tests_run_on():
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert re.search(rf"^# Apache Kafka {re.escape(KAFKA_VERSION)} \(KRaft", COMPOSE_PATH.read_text(), re.MULTILINE)


# What the tests' single node sets that changes what the bus sees; the rest (listeners, folders,
# the internal topics' partition counts for a quick start) belongs to where the broker runs.
TESTED_SETTINGS = (
    "process.roles",
    "default.replication.factor",
    "min.insync.replicas",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "group.initial.rebalance.delay.ms",
    "num.partitions",
)


def test_kafka_has_the_broker_settings_the_tests_run_with():
    node = KafkaNode(1, port=9092, controller_port=9093, folder=Path("/unused"))
    tested = dict(line.split("=", 1) for line in node.properties("1@127.0.0.1:9093", nodes=1).splitlines())
    env = service_env(SERVICES["kafka"])
    compose = {name.removeprefix("KAFKA_").lower().replace("_", "."): value for name, value in env.items()}
    for key in TESTED_SETTINGS:
        assert compose.get(key) == tested[key], f"{key}: compose {compose.get(key)!r}, tests {tested[key]!r}"


def test_the_topics_service_creates_every_bus_topic_with_explicit_partitions():
    topics = SERVICES["topics"]
    assert topics["image"] == SERVICES["kafka"]["image"]
    script = " ".join(topics["entrypoint"] + topics["command"])
    assert "kafka-topics.sh" in script and "--create" in script
    assert re.search(r"--partitions \"?\$\$PARTITIONS", script)
    assert int(service_env(topics)["PARTITIONS"]) > 1
    for topic in BUS_TOPICS:
        assert re.search(rf"\b{topic}\b", script.split("--create")[0]), topic
    assert topics["restart"] == "no"


def test_workers_scale_out_without_a_fixed_host_port():
    worker = SERVICES["worker"]
    assert worker["deploy"]["replicas"] == 3
    port = service_env(worker)["METROBUS_WEB_PORT"]
    for published in worker.get("ports", []):
        *host, container = str(published).split(":")
        assert container == port
        assert not host or host[-1] == "", f"a fixed host port cannot serve {worker['deploy']['replicas']} replicas"
    assert [str(p).rsplit(":", 2)[-2:] for p in SERVICES["worker-web"]["ports"]] == [[port, port]]
    assert "replicas" not in SERVICES["worker-web"].get("deploy", {})


def test_workers_have_an_http_health_check_and_start_in_order():
    for name in ("worker", "worker-web"):
        service = SERVICES[name]
        check = " ".join(service["healthcheck"]["test"])
        assert "python" in check and "urllib" in check, name
        assert f":{service_env(service)['METROBUS_WEB_PORT']}/metrobus/caches/" in check, name
        depends = {dep: how["condition"] for dep, how in service["depends_on"].items()}
        assert depends == {
            "kafka": "service_healthy",
            "topics": "service_completed_successfully",
            "warm": "service_completed_successfully",
        }, name
    pusher = {dep: how["condition"] for dep, how in SERVICES["pusher"]["depends_on"].items()}
    assert pusher == {"worker": "service_healthy", "worker-web": "service_healthy"}
    assert SERVICES["warm"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


# --- the image ------------------------------------------------------------------------------


def test_the_image_is_multi_stage_on_python_slim():
    args = {k: v for word, rest in DOCKERFILE if word == "ARG" for k, _, v in [rest.partition("=")]}
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
        for word, rest in DOCKERFILE
        if word == "FROM"
    ]
    assert len(bases) >= 2
    assert bases[-1] == "python:3.11-slim"
    final = stages()[-1]
    copies = [rest for word, rest in final if word == "COPY"]
    assert copies and all(rest.startswith("--from=") for rest in copies), "the final stage takes only the built venv"


def test_the_image_installs_metrobus_as_the_readme_does():
    readme = (ROOT / "README.md").read_text()
    assert "pip install ." in readme
    installs = [rest for stage in stages() for word, rest in stage if word == "RUN" and "pip install" in rest]
    assert installs == ["pip install ."], installs
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {pattern.rstrip("*") for pattern in found["include"]}  # top-level packages, sub-packages with them
    assert packages == {"metrobus_app", "agents", "tables"}
    copied = {rest.split()[0] for word, rest in stages()[0] if word == "COPY"}
    assert set(packages) <= copied, "every package of pyproject.toml goes into the build"
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in "#"]
    assert ignore[0] == "*"
    assert {"!pyproject.toml", "!README.md"} | {f"!{package}/" for package in packages} <= set(ignore)


def test_the_image_runs_the_worker_as_non_root_with_a_data_volume():
    final = stages()[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith(("root:", "0:"))
    env = image_env(final)
    assert env["METROBUS_DATA_DIR"] == "/var/lib/metrobus"
    assert env["METROBUS_WEB_BIND"] == "0.0.0.0"
    volumes = [path for word, rest in final if word == "VOLUME" for path in exec_form(rest)]
    assert env["METROBUS_DATA_DIR"] in volumes
    assert [rest for word, rest in final if word == "WORKDIR"]
    assert [rest for word, rest in final if word == "EXPOSE"] == [str(Settings().web_port)]
    cmd = [rest for word, rest in final if word == "CMD"]
    assert exec_form(cmd[-1]) == ["faust", "-A", "metrobus_app", "worker", "-l", "info"]


@pytest.mark.parametrize("name", ["worker", "worker-web"])
def test_compose_workers_run_the_images_command(name):
    [argv] = metrobus_commands(SERVICES[name]["command"])
    assert argv[:6] == ["faust", "-A", "metrobus_app", "worker", "-l", "info"]
