#!/usr/bin/env bash
# Run every check: lint, format, and the whole test suite (unit and integration).
source "$(dirname "$0")/scripts/bootstrap.sh"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
exec .venv/bin/pytest "$@"
