"""Fixtures of the fault suite (tests/faults): each scenario runs over every driver x shell.

The suite reuses the conformance harness (``Combo``, ``run_async``, ``dsn_via``, ``Admin``),
which lives in tests/conformance; that folder is put on ``sys.path`` here so the suite can be
run on its own (``pytest tests/faults``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conformance"))

from conformance_harness import COMBOS, Combo

from faultproxy import FaultProxy


@pytest.fixture(params=COMBOS, ids=[c.id for c in COMBOS])
def combo(request: pytest.FixtureRequest) -> Combo:
    """asyncpg-AsyncPool, psycopg-AsyncPool, psycopg-Pool, psycopg2-Pool."""
    return request.param.fresh()


@pytest.fixture
def pg_proxy(pg: Any, fault_proxy: Callable[[str, int], FaultProxy]) -> FaultProxy:
    """A fault proxy in front of the shared server (passing bytes through until told not to)."""
    return fault_proxy(pg.host, pg.port)
