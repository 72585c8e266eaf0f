"""Fixtures of the conformance suite: ``combo`` runs a test once per (driver, pool class) pair."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conformance_harness import COMBOS, Combo

from faultproxy import FaultProxy


@pytest.fixture(params=COMBOS, ids=[c.id for c in COMBOS])
def combo(request: pytest.FixtureRequest) -> Combo:
    """asyncpg-AsyncPool, psycopg-AsyncPool, psycopg-Pool, psycopg2-Pool."""
    return request.param.fresh()


@pytest.fixture(
    params=[c for c in COMBOS if c.transactional], ids=[c.id for c in COMBOS if c.transactional]
)
def transactional_combo(request: pytest.FixtureRequest) -> Combo:
    """The pairs whose ``pool.connection()`` block commits or rolls back (the psycopgs)."""
    return request.param.fresh()


@pytest.fixture(
    params=[c for c in COMBOS if not c.is_async], ids=[c.id for c in COMBOS if not c.is_async]
)
def thread_combo(request: pytest.FixtureRequest) -> Combo:
    """The thread ``Pool`` pairs (psycopg, psycopg2), for what only a thread pool does."""
    return request.param.fresh()


@pytest.fixture
def pg_proxy(pg: Any, fault_proxy: Callable[[str, int], FaultProxy]) -> FaultProxy:
    """A fault proxy in front of the shared server (passing bytes through until told not to)."""
    return fault_proxy(pg.host, pg.port)
