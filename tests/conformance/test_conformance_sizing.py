"""Sizing and queueing, the same for every (driver, pool class) pair, on a real server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conformance_harness import Combo, eventually, run_async

from pgmarina import PoolTimeout, TooManyWaiters


@run_async
async def test_open_with_wait_returns_with_min_size_connections_open(combo: Combo, pg: Any) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=3, max_size=5)
    s = pool.stats()
    assert (s.size, s.idle, s.in_use, s.connecting) == (3, 3, 0, 0)
    assert len(await admin.pids(combo.app_of(pool))) == 3


@run_async
async def test_pool_grows_to_max_size_under_load_and_not_beyond(combo: Combo, pg: Any) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=1, max_size=4)
    held = await asyncio.gather(*(combo.acquire(pool) for _ in range(4)))
    assert len({combo.backend_pid(c) for c in held}) == 4
    with pytest.raises(PoolTimeout):
        await combo.acquire(pool, timeout=0.2)
    s = pool.stats()
    assert (s.size, s.in_use, s.idle, s.connecting) == (4, 4, 0, 0)
    assert len(await admin.pids(combo.app_of(pool))) == 4
    for conn in held:
        await combo.release(pool, conn)
    await eventually(lambda: pool.stats().idle == 4)
    assert pool.stats().size == 4


@run_async
async def test_idle_connections_above_min_size_are_closed_after_max_idle(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(
        pg, min_size=1, max_size=4, max_idle=0.4, housekeeping_interval=0.05
    )
    held = await asyncio.gather(*(combo.acquire(pool) for _ in range(4)))
    for conn in held:
        await combo.release(pool, conn)
    assert pool.stats().size == 4
    await eventually(lambda: pool.stats().size == 1, timeout=3, what="shrinks to min_size")
    s = pool.stats()
    assert (s.idle, s.in_use) == (1, 0)
    await eventually(lambda: pool.stats().connections_closed == 3, what="3 closes complete")
    app = combo.app_of(pool)
    await admin.wait_backends(app, 1)
    conn = await combo.acquire(pool)
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)


@run_async
async def test_waiters_are_served_in_the_order_they_arrived(combo: Combo, pg: Any) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    holder = await combo.acquire(pool)
    order: list[int] = []

    async def waiter(i: int) -> None:
        conn = await combo.acquire(pool)
        order.append(i)
        await combo.release(pool, conn)

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(waiter(i)))
        await eventually(lambda n=i + 1: pool.stats().waiting == n, what=f"{i + 1} waiting")
    await combo.release(pool, holder)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert order == list(range(6))
    s = pool.stats()
    assert (s.waiting, s.size, s.waited_acquires) == (0, 1, 6)


@run_async
async def test_acquire_raises_pool_timeout_when_its_timeout_elapses(combo: Combo, pg: Any) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    holder = await combo.acquire(pool)
    for timeout in (0.1, 0.3):
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            await combo.acquire(pool, timeout=timeout)
        elapsed = time.monotonic() - t0
        assert timeout - 0.01 <= elapsed <= timeout + 0.25, elapsed
        assert "no connection available" in str(info.value)
    s = pool.stats()
    assert (s.timeouts, s.waiting, s.in_use) == (2, 0, 1)
    await combo.release(pool, holder)
    conn = await combo.acquire(pool, timeout=1)
    await combo.release(pool, conn)


@run_async
async def test_a_pool_wide_timeout_applies_when_acquire_gives_none(combo: Combo, pg: Any) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1, timeout=0.2)
    holder = await combo.acquire(pool)
    t0 = time.monotonic()
    with pytest.raises(PoolTimeout):
        await combo.acquire(pool)
    assert 0.19 <= time.monotonic() - t0 <= 0.45
    await combo.release(pool, holder)


@run_async
async def test_acquire_beyond_max_waiting_raises_too_many_waiters_at_once(
    combo: Combo, pg: Any
) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1, max_waiting=2)
    holder = await combo.acquire(pool)
    waiters = [asyncio.create_task(combo.acquire(pool, timeout=10)) for _ in range(2)]
    await eventually(lambda: pool.stats().waiting == 2)
    t0 = time.monotonic()
    with pytest.raises(TooManyWaiters):
        await combo.acquire(pool, timeout=10)
    assert time.monotonic() - t0 < 0.2
    s = pool.stats()
    assert (s.too_many_waiters, s.waiting) == (1, 2)
    await combo.release(pool, holder)
    for task in waiters:
        conn = await asyncio.wait_for(task, 10)
        assert await combo.query_value(conn, "SELECT 1") == 1
        await combo.release(pool, conn)
    assert pool.stats().waiting == 0
