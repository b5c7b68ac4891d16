#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with the pinned requirements.
#   scripts/setup.sh         what the app needs
#   scripts/setup.sh --dev   also the test tools and Debian's Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if [ ! -x .venv/bin/python ]; then
  # Debian's own python3 ships venv without ensurepip until python3-venv is installed
  "$PYTHON" -c "import ensurepip" 2>/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null; }
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  if [ ! -x /usr/bin/chromium ]; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  fi
else
  .venv/bin/python -m pip install -q -r requirements.txt
fi
# skin_core itself, editable: the scripts, benchmarks and tests import it from any folder
.venv/bin/python -m pip install -q --no-deps -e .
