"""The README documents what the code does."""

from pathlib import Path

from metrobus_app import Settings

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def test_every_setting_is_in_the_readme():
    for env, *_ in Settings().describe():
        assert f"| `{env}` |" in README, env


def test_the_readme_gives_the_two_commands_and_the_worker():
    assert "./demo.sh" in README
    assert "./test.sh" in README
    assert "faust -A metrobus_app worker" in README


def test_ci_runs_the_readmes_test_command():
    ci = (Path(__file__).resolve().parents[3] / ".ci" / "run").read_text()
    assert "./test.sh" in ci
