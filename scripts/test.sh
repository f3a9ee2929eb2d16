#!/usr/bin/env bash
# Set up everything the test suite needs (virtual environment, all extras, Debian's chromium for the
# browser tests), check lint and formatting with the pinned ruff, and run the tests.
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh all
echo "ruff check and ruff format --check ..."
ruff check --quiet .
ruff format --check --quiet .
exec python -m pytest "$@"
