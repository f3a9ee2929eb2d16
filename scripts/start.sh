#!/usr/bin/env bash
# Set up and start the app on the embedded defaults: SQLite under ./data, the offline model when no
# API key is set. Usage: ./scripts/start.sh [--port 8501]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh app
workbench init
exec workbench serve "$@"
