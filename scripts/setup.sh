#!/usr/bin/env bash
# Create .venv and install exactly requirements.lock (hashes required), then resweep itself
# (editable, no dependencies of its own: the lock has them all). Idempotent: reruns only when the
# lock changed. uv installs (parallel, ~4x faster than pip here); pip with --require-hashes is the
# fallback when uv cannot be had. torch/torchvision are pinned to the builds this machine provides.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
LOCK=requirements.lock
stamp="$VENV/.resweep-installed"
lock_id=$(sha256sum "$LOCK" requirements-reference.lock pyproject.toml | sha256sum | cut -c1-16)
start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_id" ]; then
  echo "[setup] installing $LOCK into $VENV (first time: a few minutes)"
  source scripts/uv_env.sh
  if uv_bootstrap "$VENV/.uv"; then
    "$UV" pip sync --quiet --python "$VENV/bin/python" --require-hashes "$LOCK"
    "$UV" pip install --quiet --python "$VENV/bin/python" --no-deps -e .
    "$UV" pip install --quiet --python "$VENV/bin/python" --no-deps --no-build-isolation \
      --require-hashes -r requirements-reference.lock
  else
    echo "[setup] uv unavailable: installing with pip"
    "$VENV/bin/python" -m pip install --quiet --require-hashes -r "$LOCK" 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation --require-hashes \
      -r requirements-reference.lock 2>&1 | grep -v "^WARNING: Location" || true
  fi
  "$VENV/bin/python" -c "import resweep, torch, ray, optuna" # fail here if the install did not work
  echo "$lock_id" > "$stamp"
  echo "[setup] installed in $(( $(date +%s) - start )) s"
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
