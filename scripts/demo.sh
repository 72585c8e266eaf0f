#!/usr/bin/env bash
# Install pgmarina (asyncpg + embedded PostgreSQL + rich) into a venv and run `pgmarina demo`.
# Usage: bash scripts/demo.sh [demo args]     (PYTHON=..., PGMARINA_VENV=... to override)
source "$(dirname "$0")/_venv.sh" asyncpg,psycopg,embedded,cli
exec "$VENV/bin/pgmarina" demo "$@"
