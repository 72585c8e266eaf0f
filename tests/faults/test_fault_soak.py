"""The soak script (scripts/soak.py), run briefly: its invariants hold and it says so.

CI runs it for 60 seconds as a step of its own after pytest (scripts/test.sh); this test
keeps the script itself from rotting in the default run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.private_cluster]


@pytest.mark.timeout(120)
def test_a_short_soak_over_every_pair_with_random_faults_leaks_nothing(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), *sys.path]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--seconds", "8", "--seed", "3",
         "--warmup", "2", "--json", str(report_path)],
        capture_output=True, text=True, timeout=110, env=env,
    )  # fmt: skip
    assert report_path.exists(), done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report["problems"] == [], report["problems"]
    assert done.returncode == 0, done.stdout[-2000:]
    assert report["ok"] is True
    assert report["leaked_connections"] == 0
    assert set(report["pools"]) == {
        "asyncpg-AsyncPool", "psycopg-AsyncPool", "psycopg-Pool", "psycopg2-Pool"
    }
    assert all(p["ops"] > 100 for p in report["pools"].values())
    assert sum(report["struck"].values()) >= 2  # faults did strike
    assert report["outcomes"]["ok"] > 0.9 * report["ops"]
