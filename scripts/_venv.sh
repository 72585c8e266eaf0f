# Sourced by demo.sh and test.sh: make (or reuse) the venv and install pgmarina
# with the extras named in $1.  PYTHON=... and PGMARINA_VENV=... override.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
VENV=${PGMARINA_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -U pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q -e ".[$1]" 2>&1 | grep -v '^WARNING: Location' || true
