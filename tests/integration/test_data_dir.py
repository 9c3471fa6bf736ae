"""METROBUS_DATA_DIR as a new user sets it: a folder whose parents do not exist yet, or one that cannot be."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .conftest import FAUST, ROOT, bus_env


def test_a_data_dir_whose_parents_do_not_exist_is_created_when_the_worker_starts(workers, tmp_path: Path):
    data_dir = tmp_path / "not" / "there" / "yet"
    worker = workers(METROBUS_DATA_DIR=str(data_dir)).wait_ready()
    assert data_dir.is_dir()
    assert "Traceback" not in worker.log_text() and "FileNotFoundError" not in worker.log_text()
    assert worker.get("/metrobus/caches/")  # a working worker


def test_a_data_dir_that_cannot_be_created_stops_the_worker_with_one_line(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    env = bus_env("kafka://127.0.0.1:1", blocker / "data")  # no broker needed: it stops before any client starts
    worker = subprocess.run(
        [*FAUST, "worker", "-l", "info", "--web-port", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 1
    assert worker.stderr.strip().splitlines() == [
        f"metrobus: METROBUS_DATA_DIR={str(blocker / 'data')!r} cannot be created: Not a directory"
    ]
    assert "Traceback" not in worker.stdout + worker.stderr
