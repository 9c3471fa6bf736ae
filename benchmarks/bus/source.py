"""The benchmarked code: HEAD's snapshot or a given tree, its provenance, and the pieces imported from it."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

ROOT = Path(__file__).resolve().parents[2]


def load_project(source: Path) -> SimpleNamespace:
    """Import the pieces of metrobus the benchmark shares with the bus, from ``source``.

    Imported late and from ``source`` (the workers' working directory), so that the
    benchmark and the workers run the same code, also when ``--source`` is a snapshot.
    """
    sys.path.insert(0, str(source))
    from agents.busdriver import DEFAULT_ROUTE, ROUTES
    from agents.pusher import make_record
    from metrobus_app.brokers import EmbeddedBroker, KafkaBroker, free_port
    from metrobus_app.brokers.kafka import KAFKA_VERSION
    from metrobus_app.config.settings import Settings
    from tables.demo_data import account_range
    from tables.files import ReadReport, read_emails, read_whitelist

    return SimpleNamespace(
        DEFAULT_ROUTE=list(DEFAULT_ROUTE),
        ROUTES={code: list(route) for code, route in ROUTES.items()},
        make_record=make_record,
        EmbeddedBroker=EmbeddedBroker,
        KafkaBroker=KafkaBroker,
        KAFKA_VERSION=KAFKA_VERSION,
        free_port=free_port,
        account_range=account_range,
        ReadReport=ReadReport,
        read_emails=read_emails,
        read_whitelist=read_whitelist,
        settings_of=Settings.from_env,
    )


def git(*args: str, cwd: Path = ROOT) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(source: Path, snapshot_of: str | None) -> dict[str, Any]:
    """Which code ran: the commit, whether tracked files differed from it, and the tree the workers ran."""
    if snapshot_of is not None:
        return {"git_commit": snapshot_of, "git_dirty": False, "source": str(source), "source_kind": "snapshot"}
    commit = git("rev-parse", "HEAD", cwd=source)
    if commit is not None:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", cwd=source))
        return {"git_commit": commit, "git_dirty": dirty, "source": str(source), "source_kind": "working tree"}
    return {"git_commit": None, "git_dirty": None, "source": str(source), "source_kind": "other"}


def take_snapshot(into: Path) -> str:
    """Extract this repository's HEAD into ``into`` (``git archive``); the commit it is."""
    commit = git("rev-parse", "HEAD")
    if commit is None:
        raise click.ClickException("--snapshot needs git and a commit in this repository")
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True)
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return commit
