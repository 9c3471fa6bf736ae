#!/usr/bin/env bash
# Run every check: lint, format, and the whole test suite (unit and integration).
source "$(dirname "$0")/scripts/bootstrap.sh"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"
