#!/usr/bin/env bash
# Run every check: lint, format, import layers (lint-imports), types (mypy), the docs build, and the whole suite.
source "$(dirname "$0")/scripts/bootstrap.sh"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
.venv/bin/mypy
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
exec .venv/bin/pytest "$@"
