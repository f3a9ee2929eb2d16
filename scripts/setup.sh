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

# Run a long step with a line every 20 s, so nobody waits without being told what happens.
with_heartbeat() {
  local what="$1"; shift
  local start=$SECONDS next=$((SECONDS + 20))
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( SECONDS >= next )) && kill -0 "$pid" 2>/dev/null; then
      echo "  ... still $what ($(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s so far)"
      next=$((next + 20))
    fi
  done
  wait "$pid"
}

if [ ! -f "$stamp" ]; then
  echo "Setting up .venv (once; later starts skip this) ..."
  python -m pip install -q --upgrade pip wheel
  if [ "$want" = "all" ]; then target=".[dev,postgres,e2e,notebook]"; else target="."; fi
  echo "Installing the workbench and its libraries (about 1-2 minutes) ..."
  with_heartbeat "installing libraries" python -m pip install -q -e "$target"
  if ! python -c 'import llama_cpp' 2>/dev/null; then
    # llama-cpp-python is compiled from source here (no prebuilt wheel on PyPI); both cores help.
    echo "Building the offline model's engine (llama.cpp; about 4-8 minutes, once; the wheel is cached) ..."
    export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
  fi
  with_heartbeat "building llama.cpp" python -m pip install -q -e ".[local]"
  touch "$stamp"
  echo "Setup done."
fi
debian_install() {
  # debian_install PACKAGE WHAT-IS-MISSING-WITHOUT-IT: Debian's package, as root or through sudo
  # (without refreshing the package lists first when they already know it); a warning if neither works.
  local run=""
  if [ "$(id -u)" != "0" ]; then
    command -v sudo >/dev/null 2>&1 || return 0
    run="sudo"
  fi
  $run apt-get install -y -qq "$1" >/dev/null 2>&1 \
    || ($run apt-get update -qq && $run apt-get install -y -qq "$1") >/dev/null 2>&1 \
    || echo "warning: could not install $1 ($2)" >&2
}
if [ "$want" = "all" ] && ! command -v chromium >/dev/null 2>&1; then
  # The browser tests drive Debian's chromium (Playwright cannot download its own browsers here).
  debian_install chromium "the browser tests cannot run"
fi
if [ "$want" = "all" ] && [ ! -d /usr/share/fonts/truetype/wqy ]; then
  # A Chinese font, so the browser tests' screenshots of the Chinese pages show characters, not boxes.
  debian_install fonts-wqy-microhei "screenshots of Chinese pages show boxes"
fi
if [ "$want" = "all" ] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  # The reverse proxy of the several-servers test (tests/e2e/test_multi_server.py): Debian's nginx.
  debian_install nginx "the several-servers test cannot run"
fi
if [ "$want" = "all" ] && [ ! -f .venv/axe/node_modules/axe-core/axe.min.js ]; then
  # axe-core (accessibility rules) for the browser tests, from the npm registry.
  if command -v npm >/dev/null 2>&1; then
    mkdir -p .venv/axe
    (cd .venv/axe && npm install --silent --no-audit --no-fund axe-core@4 >/dev/null 2>&1) \
      || echo "warning: could not install axe-core with npm" >&2
  else
    echo "warning: npm is missing, so axe-core (accessibility tests) is not installed" >&2
  fi
fi
