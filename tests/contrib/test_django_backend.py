"""``pgmarina.contrib.django``: a Django project of our own, run by Django's test runner.

The project (``django_project/``) uses ``ENGINE: "pgmarina.contrib.django"``;
its suite (``django_project/shop/tests.py``) covers the ORM, ``atomic()``,
``on_commit``, health checks after a backend is terminated, a pool timeout,
the ``CONN_MAX_AGE`` conflict, forked workers and an async view.  Django runs
in a subprocess, so that its global state stays out of pytest's process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parent / "django_project"
SRC = Path(__file__).resolve().parents[2] / "src"
SUITE_TESTS = 13  # the tests in django_project/shop/tests.py


def run_django(pg: Any, *args: str, timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(SRC), str(PROJECT)]),
        DJANGO_SETTINGS_MODULE="djproject.settings",
        PGM_DJ_HOST=pg.host,
        PGM_DJ_PORT=str(pg.port),
        PGM_DJ_USER=pg.user,
        PGM_DJ_PASSWORD=pg.password or "",
        PGM_DJ_NAME=pg.dbname,
        PGM_DJ_TEST_NAME=f"test_pgmarina_dj_{uuid.uuid4().hex[:8]}",
    )
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "django", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ran(proc: subprocess.CompletedProcess[str]) -> int:
    found = re.search(r"^Ran (\d+) tests? in", proc.stderr, re.MULTILINE)
    return int(found.group(1)) if found else -1


@pytest.mark.slow
@pytest.mark.timeout(180)  # a whole Django test run, databases created and dropped
def test_djangos_test_runner_passes_the_projects_suite_on_the_pgmarina_engine(pg: Any) -> None:
    proc = run_django(pg, "test", "shop", "--noinput", "-v", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran(proc) == SUITE_TESTS, proc.stderr
    assert re.search(r"^OK$", proc.stderr, re.MULTILINE), proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)  # a whole Django test run, databases created and dropped
def test_djangos_parallel_test_runner_forks_workers_that_each_pool_on_their_own_database(
    pg: Any,
) -> None:
    """Django's parallel runner forks its workers after using the pool, and points each at
    a clone of the test database: the workers must not share the parent's connections."""
    proc = run_django(pg, "test", "shop", "--noinput", "--parallel", "2", "-v", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran(proc) == SUITE_TESTS, proc.stderr
    # The multiprocessing test skips itself in a worker (daemons have no children).
    assert re.search(r"^OK \(skipped=1\)$", proc.stderr, re.MULTILINE), proc.stderr
    assert "Cloning test database" in proc.stderr, proc.stderr
