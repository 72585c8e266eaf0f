#!/usr/bin/env bash
# Install pgmarina (asyncpg + embedded PostgreSQL + rich) into a venv and run `pgmarina demo`.
# Usage: bash scripts/demo.sh [demo args]     (PYTHON=..., PGMARINA_VENV=... to override)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${PGMARINA_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -U pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q -e '.[asyncpg,psycopg,embedded,cli]' 2>&1 \
    | grep -v '^WARNING: Location' || true
exec "$VENV/bin/pgmarina" demo "$@"
