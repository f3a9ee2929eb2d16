#!/usr/bin/env bash
# Set up everything the test suite needs (virtual environment, all extras, Debian's chromium for the
# browser tests) and run it. Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh all
exec python -m pytest "$@"
