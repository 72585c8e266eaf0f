"""Regression tests for defects found by attacking the pools (the Reliability issue).

Each test names the defect it guards.  They run on every driver x shell pair against a real
server, through the fault proxy where the defect needs a slow or partitioned network.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from conformance_harness import Combo, dsn_via, eventually, run_async

from faultproxy import FaultProxy
from pgmarina import PoolClosed, PoolError, PoolTimeout


class BlockFailed(Exception):
    """Raised on purpose inside a ``pool.connection()`` block."""


@run_async
async def test_a_tiny_acquire_timeout_never_condemns_a_healthy_connection_due_a_check(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    """Defect 1 (and 3): a check the caller cannot wait for used to get only the caller's
    budget and terminate healthy connections (async), or overrun the caller's deadline
    (threads).  Now the caller times out on time and the check goes on in the background."""
    pool = await combo.make_pool(
        pg, dsn=dsn_via(pg, pg_proxy), min_size=3, max_size=3, check_window=0, reset_timeout=2
    )
    admin = await combo.admin(pg)
    before = await admin.pids(combo.app_of(pool))
    assert len(before) == 3
    await asyncio.sleep(0.01)  # every idle connection is now due a check
    pg_proxy.delay(0.1)  # a check takes a 200 ms round trip
    outcomes = []
    for _ in range(3):
        t0 = time.monotonic()
        try:
            conn = await combo.acquire(pool, timeout=0.03)
        except PoolTimeout as exc:
            outcomes.append("timeout")
            assert "waiting" in str(exc)
        else:
            outcomes.append("served")
            await combo.release(pool, conn)
        assert time.monotonic() - t0 < 0.03 + 0.15, "the acquire overran its timeout"
    assert "timeout" in outcomes
    pg_proxy.pass_through()
    await eventually(lambda: pool.stats().idle == 3, what="the checks finish and keep all three")
    s = pool.stats()
    assert (s.checks_failed, s.connections_lost, s.size) == (0, 0, 3)
    assert s.timeouts == outcomes.count("timeout")
    assert await admin.pids(combo.app_of(pool)) == before  # not one was replaced


@pytest.mark.slow
@run_async
async def test_the_acquire_timeout_bounds_the_whole_acquire_when_checks_hang(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    """Defect 3: with the server frozen and four idle connections due a check, the sync
    acquire ran one bounded check after another (8 s for timeout=1) and said it had waited
    0.0006 s.  The caller's deadline bounds the whole acquire; the message states the wait."""
    pool = await combo.make_pool(
        pg, dsn=dsn_via(pg, pg_proxy), min_size=4, max_size=4, check_window=0, reset_timeout=2
    )
    await asyncio.sleep(0.01)
    pg_proxy.blackhole()
    try:
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout) as caught:
            await combo.acquire(pool, timeout=1)
        waited = time.monotonic() - t0
        assert 0.9 <= waited < 1.5
        assert "waiting 1" in str(caught.value) or "waiting 0.9" in str(caught.value)
    finally:
        pg_proxy.pass_through()
        pg_proxy.reset_all()
    conn = await combo.acquire(pool, timeout=10)  # the pool recovers with fresh connections
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)


@pytest.mark.slow
@run_async
async def test_the_rollback_ending_a_failed_block_is_bounded_by_reset_timeout(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    """Defect 5: on psycopg and psycopg2, the rollback at the end of a block that raised had
    no time limit and hung for ever in a partition.  It is bounded by reset_timeout like any
    reset, the block's own error still propagates, and the cut-off connection is replaced."""
    pool = await combo.make_pool(
        pg, dsn=dsn_via(pg, pg_proxy), min_size=1, max_size=1, reset_timeout=1
    )
    t0 = 0.0
    try:
        with pytest.raises(BlockFailed):
            async with combo.connection(pool) as conn:
                await combo.begin(conn)
                await combo.execute(conn, "SELECT 1")
                pg_proxy.blackhole()
                t0 = time.monotonic()
                raise BlockFailed
        assert time.monotonic() - t0 < 1 + 1.0
    finally:
        pg_proxy.pass_through()
        pg_proxy.reset_all()
    conn = await combo.acquire(pool, timeout=10)
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)


@run_async
async def test_a_second_close_waits_for_leases_and_terminates_them_after_its_timeout(
    combo: Combo, pg: Any
) -> None:
    """Defect 11: a second (or concurrent) AsyncPool.close() returned at once with a lease
    still out, which stayed usable.  Every close() waits up to its own timeout."""
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    admin = await combo.admin(pg)
    lease = await combo.acquire(pool)
    pid = combo.backend_pid(lease)
    first = asyncio.ensure_future(combo.close(pool, timeout=30))
    await eventually(lambda: pool.closed, what="the first close() starts")
    t0 = time.monotonic()
    await combo.close(pool, timeout=0.5)
    assert time.monotonic() - t0 >= 0.45, "the second close() did not wait for the lease"
    await admin.wait_gone(pid)  # ... and then terminated it
    await asyncio.wait_for(first, 10)
    assert pool.stats().size == 0


@run_async
async def test_a_close_after_a_cancelled_close_still_waits_for_the_leases(
    combo: Combo, pg: Any
) -> None:
    """Defect 11: after a close() was cancelled, the next close() returned at once."""
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    lease = await combo.acquire(pool)
    first = asyncio.ensure_future(combo.close(pool, timeout=30))
    await eventually(lambda: pool.closed, what="the first close() starts")
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    closing = asyncio.ensure_future(combo.close(pool, timeout=10))
    await asyncio.sleep(0.3)
    assert not closing.done(), "close() returned with a lease still out"
    await combo.release(pool, lease)
    await asyncio.wait_for(closing, 5)
    assert pool.stats().size == 0


@run_async
async def test_entering_one_connection_context_twice_is_refused_and_leaks_nothing(
    combo: Combo, pg: Any
) -> None:
    """Defect 14: re-entering one ``pool.connection()`` object (nested, or shared) leaked a
    connection and failed with an AttributeError.  Now: a clear PoolError, nothing lost."""
    pool = await combo.make_pool(pg, min_size=2, max_size=2)
    ctx = pool.connection()
    if combo.is_async:
        async with ctx as first:
            with pytest.raises(PoolError, match="already in use"):
                async with ctx:
                    pass  # pragma: no cover - never entered
            assert await combo.query_value(first, "SELECT 1") == 1
    else:
        first = await asyncio.to_thread(ctx.__enter__)
        with pytest.raises(PoolError, match="already in use"):
            await asyncio.to_thread(ctx.__enter__)
        assert await combo.query_value(first, "SELECT 1") == 1
        await asyncio.to_thread(ctx.__exit__, None, None, None)
    s = pool.stats()
    assert (s.size, s.idle, s.in_use) == (2, 2, 0)
    async with combo.connection(pool) as again:  # a fresh context works as ever
        assert await combo.query_value(again, "SELECT 1") == 1


@run_async
async def test_pool_closed_errors_name_the_pool(combo: Combo, pg: Any) -> None:
    """Also seen under attack: ``PoolClosed`` said "the pool is closed" without naming it."""
    pool = await combo.make_pool(pg, min_size=1, max_size=1, name="orders-db")
    held = await combo.acquire(pool)
    waiting = asyncio.ensure_future(combo.acquire(pool, timeout=10))
    await eventually(lambda: pool.stats().waiting == 1, what="a caller queues")
    closing = asyncio.ensure_future(combo.close(pool, timeout=10))
    with pytest.raises(PoolClosed, match="orders-db"):
        await waiting
    await combo.release(pool, held)
    await asyncio.wait_for(closing, 10)
    with pytest.raises(PoolClosed, match="orders-db"):
        await combo.acquire(pool, timeout=1)
