"""Fixtures of the conformance suite: ``combo`` runs a test once per (driver, pool class) pair."""

from __future__ import annotations

import pytest
from conformance_harness import COMBOS, Combo


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
