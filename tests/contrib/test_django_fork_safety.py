"""Fork safety under the Django backend: a child never touches its parent's sockets.

Each case runs in a subprocess of its own, so that the fork happens in a
small single-threaded script rather than in pytest's process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"


def run_script(source: str, dsn: str, timeout: float = 45.0) -> str:
    env = dict(os.environ, PYTHONPATH=str(SRC), PGM_DSN=dsn)
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


INHERITED_POOL = """
    import gc, os, sys
    import psycopg
    from pgmarina import Pool

    dsn = os.environ["PGM_DSN"]
    pool = Pool(dsn, driver="psycopg", min_size=2, max_size=2, check_window=None)
    pool.open(wait=True)
    first, second = pool.acquire(), pool.acquire()
    pids = {c.info.backend_pid for c in (first, second)}
    pool.release(first)
    pool.release(second)

    child = os.fork()
    if child == 0:
        # The child drops the inherited pool, then exits normally (atexit
        # runs the finalizers still pending).
        del pool, first, second
        gc.collect()
        sys.exit(0)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status

    # The parent's two sessions are still there, and still its own.
    with psycopg.connect(dsn, autocommit=True) as watcher:
        alive = {r[0] for r in watcher.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)]
        )}
    assert alive == pids, (alive, pids)
    a, b = pool.acquire(), pool.acquire()
    assert {c.info.backend_pid for c in (a, b)} == pids
    assert a.execute("SELECT 1").fetchone() == (1,)
    assert b.execute("SELECT 2").fetchone() == (2,)
    pool.release(a)
    pool.release(b)
    pool.close()
    print("parent intact")
"""


def test_a_forked_child_dropping_an_inherited_pool_never_terminates_the_parents_connections(
    pg: Any,
) -> None:
    """Regression: the thread pool's finalizer (for a pool collected without
    close()) ran in a forked child that dropped or exited with an inherited
    pool, and terminated every connection: the parent's sessions ended."""
    assert "parent intact" in run_script(INHERITED_POOL, pg.dsn)
