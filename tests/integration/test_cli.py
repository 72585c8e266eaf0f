"""The ``pgmarina`` command (Day one issue, items 3, 5 and 6).

``pgmarina server`` starts a throwaway PostgreSQL and prints its DSN (before, only the
module docstring of ``pgmarina.contrib.embedded`` said so, and its ``--help`` said
``usage: embedded.py``); ``--version`` exists; ``--driver`` has a help text; and the demo's
piped output no longer glues the pool's repr onto the table's last line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import pgmarina
from pgmarina.cli import main
from pgmarina.contrib import embedded


def _env() -> dict[str, str]:
    src = str(Path(pgmarina.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_pgmarina_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"pgmarina {pgmarina.__version__}\n"


def test_every_demo_option_has_a_help_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    options = out.split("options:", 1)[1]
    assert "--driver {asyncpg,psycopg}\n                        the driver" in options


@pytest.mark.parametrize(
    ("run", "usage"),
    [
        (lambda: main(["server", "--help"]), "usage: pgmarina server"),
        (lambda: embedded.main(["--help"]), "usage: python -m pgmarina.contrib.embedded"),
    ],
    ids=["pgmarina server", "python -m pgmarina.contrib.embedded"],
)
def test_the_server_command_says_what_it_does(
    run: object, usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: ``python -m pgmarina.contrib.embedded --help`` printed ``usage:
    embedded.py`` and no word on the DSN it prints."""
    with pytest.raises(SystemExit) as info:
        run()  # type: ignore[operator]
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(usage)
    assert "DSN" in out
    assert "--port" in out


@pytest.mark.private_cluster
def test_pgmarina_server_prints_a_dsn_that_works_and_stops_on_ctrl_c() -> None:
    ok, why = embedded.private_clusters_available()
    if not ok:
        pytest.skip(why)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgmarina", "server"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        assert proc.stdout is not None
        dsn = None
        deadline = time.monotonic() + 30
        while dsn is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"pgmarina server ended early: {proc.stderr.read() if proc.stderr else ''}"
            if line.startswith("up in "):
                dsn = line.split(": ", 1)[1].split()[0]
        assert dsn is not None
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.slow
@pytest.mark.private_cluster
def test_the_demo_piped_counts_what_the_restart_cost_on_lines_of_their_own() -> None:
    """Regression: piped, the pool's repr was glued onto the table's last line; and the
    summary lumped failed queries and acquires into one "errors" figure."""
    ok, why = embedded.private_clusters_available()
    if not ok:
        pytest.skip(why)
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import sys; from pgmarina.cli import main; "
         "sys.exit(main(['demo', '--seconds', '1.5', '--tasks', '8', '--size', '4']))"],
        capture_output=True, text=True, timeout=60, env=_env(), check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("<AsyncPool 'demo' asyncpg@") for line in lines), proc.stdout
    assert any(line.startswith("server restart at ") and "in flight" in line for line in lines)
    assert any(line.startswith("acquires: ") and "all served" in line for line in lines)
    for line in proc.stderr.splitlines():  # only the pool's own reconnect log lines
        assert line.startswith("WARNING pgmarina: demo: connect failed ("), line
