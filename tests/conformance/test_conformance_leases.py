"""Leases: use after release, double release, the wrong pool, callers that give up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conformance_harness import Combo, eventually, run_async

from pgmarina import ConnectionReleasedError, unwrap


@run_async
async def test_a_released_connection_raises_connection_released_error_when_used(
    combo: Combo, pg: Any
) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    conn = await combo.acquire(pool)
    assert not conn.released
    assert isinstance(unwrap(conn), combo.raw_connection_class)
    await combo.release(pool, conn)
    assert conn.released
    with pytest.raises(ConnectionReleasedError):
        await combo.query_value(conn, "SELECT 1")
    with pytest.raises(ConnectionReleasedError):
        combo.backend_pid(conn)
    with pytest.raises(ConnectionReleasedError):
        unwrap(conn)
    assert "released" in repr(conn)
    # The pooled connection itself is unharmed and serves the next borrower.
    again = await combo.acquire(pool)
    assert await combo.query_value(again, "SELECT 1") == 1
    await combo.release(pool, again)


@run_async
async def test_a_borrower_can_switch_its_lease_to_autocommit_the_drivers_way(
    transactional_combo: Combo, pg: Any
) -> None:
    # psycopg_pool's docs do exactly this inside "with pool.connection() as conn".
    combo = transactional_combo
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    conn = await combo.acquire(pool)
    try:
        await combo.set_autocommit(conn, True)
        assert conn.autocommit is True
        assert unwrap(conn).autocommit is True
        await combo.execute(conn, "SELECT 1")
        assert not combo.in_transaction(conn)
        await combo.set_autocommit(conn, False)
        assert unwrap(conn).autocommit is False
    finally:
        await combo.release(pool, conn)
    with pytest.raises(ConnectionReleasedError):
        await combo.set_autocommit(conn, True)


@run_async
async def test_a_connection_its_borrower_closed_is_replaced(combo: Combo, pg: Any) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.close_connection(conn)
    await combo.release(pool, conn)
    await admin.wait_gone(pid)
    again = await combo.acquire(pool, timeout=5)
    assert combo.backend_pid(again) != pid
    assert await combo.query_value(again, "SELECT 1") == 1
    await combo.release(pool, again)
    s = pool.stats()
    assert (s.size, s.in_use) == (1, 0)


@run_async
async def test_releasing_a_connection_twice_raises_and_leaves_the_pool_intact(
    combo: Combo, pg: Any
) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=2)
    conn = await combo.acquire(pool)
    await combo.release(pool, conn)
    with pytest.raises(ConnectionReleasedError):
        await combo.release(pool, conn)
    await eventually(lambda: pool.stats().idle == 1)
    s = pool.stats()
    assert (s.size, s.idle, s.in_use) == (1, 1, 0)
    # The idle connection is handed out once, not twice.
    a, b = await asyncio.gather(combo.acquire(pool), combo.acquire(pool))
    assert combo.backend_pid(a) != combo.backend_pid(b)
    await combo.release(pool, a)
    await combo.release(pool, b)


@run_async
async def test_releasing_a_connection_to_another_pool_raises_value_error(
    combo: Combo, pg: Any
) -> None:
    home = await combo.make_pool(pg, min_size=1, max_size=1)
    other = await combo.make_pool(pg, min_size=1, max_size=1)
    conn = await combo.acquire(home)
    with pytest.raises(ValueError, match="another pool"):
        await combo.release(other, conn)
    assert not conn.released
    assert await combo.query_value(conn, "SELECT 1") == 1
    assert other.stats().idle == 1
    assert home.stats().in_use == 1
    await combo.release(home, conn)
    await eventually(lambda: home.stats().idle == 1)
    assert other.stats().size == 1


@run_async
async def test_releasing_something_that_is_not_a_lease_raises_type_error(
    combo: Combo, pg: Any
) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    conn = await combo.acquire(pool)
    with pytest.raises(TypeError):
        await combo.release(pool, unwrap(conn))
    await combo.release(pool, conn)
    assert pool.stats().in_use == 0


@run_async
async def test_a_caller_that_gives_up_waiting_leaves_no_trace(combo: Combo, pg: Any) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    holder = await combo.acquire(pool)
    await combo.give_up_waiting(pool, after=0.2)
    s = pool.stats()
    assert (s.waiting, s.in_use, s.size) == (0, 1, 1)
    # The connection handed back goes idle (not to the departed caller)...
    await combo.release(pool, holder)
    await eventually(lambda: pool.stats().idle == 1)
    # ...and the next caller gets it without waiting.
    waited = pool.stats().waited_acquires
    conn = await combo.acquire(pool, timeout=1)
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)
    s = pool.stats()
    assert s.waited_acquires == waited
    assert (s.size, s.waiting) == (1, 0)


@run_async
async def test_a_borrower_interrupted_while_holding_returns_the_connection(
    combo: Combo, pg: Any
) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    await combo.interrupt_while_holding(pool)
    await eventually(lambda: pool.stats().in_use == 0, what="the lease comes back")
    await eventually(lambda: pool.stats().size == 1)
    conn = await combo.acquire(pool, timeout=5)
    assert not combo.in_transaction(conn)
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)
    s = pool.stats()
    assert s.size == s.idle + s.in_use + s.connecting
