#!/usr/bin/env bash
# Create .venv and install resweep with its test tools. Idempotent: reruns only when
# pyproject.toml changed. torch/torchvision are pinned to the builds this machine provides.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
stamp="$VENV/.resweep-installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing resweep and its dependencies (first time: several minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import resweep, torch, ray, optuna" # fail here if the install did not work
  touch "$stamp"
fi
# Headless Chromium for the dashboard browser test (Debian package); optional elsewhere.
if [ "${RESWEEP_BROWSER:-1}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium for the dashboard browser test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[setup] chromium could not be installed; the browser test will be skipped"
  fi
fi
echo "[setup] ready: $VENV"
