#!/usr/bin/env bash
# `make test-latest`: install the newest versions pyproject.toml allows into a separate
# environment (.venv-latest; .venv and the lock are untouched), print every version that
# differs from requirements.lock, then run the tests there. A failure here is drift a user
# installing resweep without the lock would meet: fix it, then refresh the lock (make lock).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV_LATEST:-.venv-latest}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
source scripts/uv_env.sh
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
uv_bootstrap "$VENV/.uv" || { echo "[latest] uv is needed for make test-latest"; exit 1; }
echo "[latest] resolving the newest versions allowed by pyproject.toml into $VENV"
"$UV" pip install --quiet --python "$VENV/bin/python" --upgrade --reinstall-package resweep \
  -e ".[dev,dashboard,tracking]"
"$UV" pip freeze --quiet --python "$VENV/bin/python" --exclude-editable > "$VENV/versions.txt"
"$VENV/bin/python" - requirements.lock "$VENV/versions.txt" <<'PY'
import re, sys
def pins(path):
    out = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out
lock, latest = pins(sys.argv[1]), pins(sys.argv[2])
seeded = {"pip"}  # put there by venv itself, not by the resolution
diff = sorted(n for n in set(lock) | set(latest) if n not in seeded and lock.get(n) != latest.get(n))
print(f"[latest] {len(diff)} of {len(latest)} packages differ from requirements.lock")
for n in diff:
    print(f"  {n:32s} lock {lock.get(n, '-'):>14s}   latest {latest.get(n, '-'):>14s}")
PY
echo "[latest] running: pytest ${LATEST_PYTEST_ARGS:-(the whole suite)}"
# shellcheck disable=SC2086
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider ${LATEST_PYTEST_ARGS:-}
