"""``pgmarina demo`` shows the acquire wait's p50/p99 and a leak warning."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pgmarina


def _env() -> dict[str, str]:
    src = str(Path(pgmarina.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_the_demo_shows_acquire_percentiles_and_the_leak_it_was_asked_to_make(pg: Any) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "pgmarina", "demo", "--dsn", pg.dsn,
         "--seconds", "1.5", "--tasks", "6", "--size", "3", "--leak", "--leak-timeout", "0.3"],
        capture_output=True, text=True, timeout=60, env=_env(), check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "acquire p50/p99" in out  # the dashboard's row
    lines = out.splitlines()
    assert any(line.startswith("acquire wait p50 ") and " p99 " in line for line in lines), out
    # The summary names the leak once, with its acquirer (the dashboard above it shows the
    # same leak in a panel of its own, wrapped to the console's width).
    summary = re.compile(r"^leak: connection #\d+ held [\d.]+s, acquired at \S+ in _forgetful$")
    assert sum(bool(summary.match(line)) for line in lines) == 1, out
    warnings = [line for line in proc.stderr.splitlines() if "not released" in line]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith("WARNING pgmarina: demo: connection #")


def test_the_demo_reports_no_leak_when_none_happens(pg: Any) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "pgmarina", "demo", "--dsn", pg.dsn,
         "--seconds", "1", "--tasks", "4", "--size", "2"],
        capture_output=True, text=True, timeout=60, env=_env(), check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "leak: " not in proc.stdout and "not released" not in proc.stderr
    assert "acquire wait p50 " in proc.stdout
