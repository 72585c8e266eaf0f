"""Closing and terminating a pool while connections are out and callers wait."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conformance_harness import Combo, eventually, run_async

from pgmarina import PoolClosed


@run_async
async def test_close_waits_for_a_lease_that_comes_back_in_time(combo: Combo, pg: Any) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=2, max_size=2)
    app = combo.app_of(pool)
    conn = await combo.acquire(pool)
    closing = asyncio.create_task(combo.close(pool, timeout=5))
    await asyncio.sleep(0.3)
    assert not closing.done()
    assert pool.closed
    with pytest.raises(PoolClosed):
        await combo.acquire(pool, timeout=1)
    # The borrower keeps working until it is done...
    assert await combo.query_value(conn, "SELECT 1") == 1
    pid = combo.backend_pid(conn)
    backends_while_leased = await admin.pids(app)
    t0 = time.monotonic()
    await combo.release(pool, conn)
    await asyncio.wait_for(closing, 5)
    assert time.monotonic() - t0 < 1.0
    # ...but the idle connection was closed at once, not when the lease came back.
    assert backends_while_leased == {pid}
    await admin.wait_backends(app, 0)
    s = pool.stats()
    assert (s.size, s.idle, s.in_use) == (0, 0, 0)
    assert s.connections_closed == s.connections_opened == 2


@run_async
async def test_close_fails_queued_waiters_and_terminates_leases_after_its_timeout(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    app = combo.app_of(pool)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    waiter = asyncio.create_task(combo.acquire(pool, timeout=10))
    await eventually(lambda: pool.stats().waiting == 1)
    t0 = time.monotonic()
    closing = asyncio.create_task(combo.close(pool, timeout=0.5))
    with pytest.raises(PoolClosed):
        await asyncio.wait_for(waiter, 2)
    assert time.monotonic() - t0 < 0.4  # failed at once, not after the close timeout
    await asyncio.wait_for(closing, 5)
    assert 0.45 <= time.monotonic() - t0 < 3
    await admin.wait_gone(pid)
    with pytest.raises(combo.driver_errors):
        await combo.query_value(conn, "SELECT 1")
    await combo.release(pool, conn)  # the borrower's late release is harmless
    s = pool.stats()
    assert (s.size, s.in_use, s.waiting) == (0, 0, 0)
    assert not await admin.pids(app)


@run_async
async def test_the_pool_as_a_context_manager_opens_filled_and_closes_on_exit(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, opened=False, min_size=2, max_size=3)
    app = combo.app_of(pool)
    async with combo.pool_context(pool) as entered:
        assert entered is pool
        assert pool.stats().idle == 2
        assert len(await admin.pids(app)) == 2
        async with combo.connection(pool) as conn:
            assert await combo.query_value(conn, "SELECT 1") == 1
    assert pool.closed
    assert pool.stats().size == 0
    await admin.wait_backends(app, 0)


@run_async
async def test_close_is_idempotent_and_a_closed_pool_does_not_reopen(combo: Combo, pg: Any) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    await combo.close(pool)
    await combo.close(pool)
    with pytest.raises(PoolClosed):
        await combo.open(pool)
    with pytest.raises(PoolClosed):
        await combo.acquire(pool, timeout=1)
    assert pool.stats().size == 0


@run_async
async def test_terminate_fails_waiters_and_drops_every_connection_at_once(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=3, max_size=3)
    app = combo.app_of(pool)
    held = await asyncio.gather(combo.acquire(pool), combo.acquire(pool))
    pids = {combo.backend_pid(c) for c in held}
    assert len(await admin.pids(app)) == 3
    last = await combo.acquire(pool)
    pids.add(combo.backend_pid(last))
    waiter = asyncio.create_task(combo.acquire(pool, timeout=10))
    await eventually(lambda: pool.stats().waiting == 1)
    await combo.release(pool, last)  # handed straight to the waiter
    conn = await asyncio.wait_for(waiter, 5)
    held.append(conn)
    waiter = asyncio.create_task(combo.acquire(pool, timeout=10))
    await eventually(lambda: pool.stats().waiting == 1)
    t0 = time.monotonic()
    await combo.terminate(pool)
    with pytest.raises(PoolClosed):
        await asyncio.wait_for(waiter, 2)
    assert time.monotonic() - t0 < 1.0
    for pid in pids:
        await admin.wait_gone(pid)
    for c in held:
        with pytest.raises(combo.driver_errors):
            await combo.query_value(c, "SELECT 1")
        await combo.release(pool, c)
    s = pool.stats()
    assert (s.size, s.in_use, s.idle, s.waiting) == (0, 0, 0, 0)
    with pytest.raises(PoolClosed):
        await combo.acquire(pool, timeout=1)
