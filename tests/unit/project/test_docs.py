"""The README documents what the code does."""

from pathlib import Path

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def test_the_readme_points_to_the_settings_page_made_from_the_settings():
    assert "(docs/settings.md)" in README
    assert "faust -A metrobus_app settings" in README


def test_the_readme_gives_the_two_commands_and_the_worker():
    assert "./demo.sh" in README
    assert "./test.sh" in README
    assert "faust -A metrobus_app worker" in README


def test_ci_runs_the_readmes_test_command():
    ci = (Path(__file__).resolve().parents[3] / ".ci" / "run").read_text()
    assert "./test.sh" in ci
