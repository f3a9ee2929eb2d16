#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/start.sh: creates .venv (Python >= 3.11) and installs the
# workbench with the extras named by $1 ("app": the offline model; "all": everything the tests need).
set -euo pipefail
want="${1:-app}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "Python 3.11 or newer is needed" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=".venv/.installed-$want-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  python -m pip install -q --upgrade pip wheel
  if [ "$want" = "all" ]; then
    python -m pip install -q -e '.[dev,local,postgres,e2e]'
  else
    python -m pip install -q -e '.[local]'
  fi
  touch "$stamp"
fi
if [ "$want" = "all" ] && ! command -v chromium >/dev/null 2>&1; then
  # The browser tests drive Debian's chromium (Playwright cannot download its own browsers here).
  if [ "$(id -u)" = "0" ]; then
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "warning: could not install chromium" >&2
  elif command -v sudo >/dev/null 2>&1; then
    (sudo apt-get update -qq && sudo apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "warning: could not install chromium" >&2
  fi
fi
