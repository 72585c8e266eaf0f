"""Replacing connections: lifetime, uses, expire(), health checks, broken backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conformance_harness import Combo, eventually, run_async

from pgmarina import PoolError


async def _pid_of_next_lease(combo: Combo, pool: Any) -> int:
    conn = await combo.acquire(pool)
    try:
        assert await combo.query_value(conn, "SELECT 1") == 1
        return combo.backend_pid(conn)
    finally:
        await combo.release(pool, conn)


@run_async
async def test_a_connection_past_max_lifetime_is_replaced(combo: Combo, pg: Any) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(
        pg, min_size=1, max_size=1, max_lifetime=0.3, housekeeping_interval=0.05
    )
    first = await _pid_of_next_lease(combo, pool)
    assert await _pid_of_next_lease(combo, pool) == first  # young: kept
    await asyncio.sleep(0.45)
    second = await _pid_of_next_lease(combo, pool)
    assert second != first
    await admin.wait_gone(first)
    await eventually(lambda: pool.stats().connections_closed >= 1)


@run_async
async def test_a_connection_that_outlives_max_lifetime_while_leased_is_replaced_on_return(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=1, max_size=1, max_lifetime=0.2)
    conn = await combo.acquire(pool)
    old = combo.backend_pid(conn)
    await asyncio.sleep(0.3)
    assert await combo.query_value(conn, "SELECT 1") == 1  # a lease is never cut short
    await combo.release(pool, conn)
    await admin.wait_gone(old)
    assert await _pid_of_next_lease(combo, pool) != old


@run_async
async def test_a_connection_is_replaced_after_max_uses_leases(combo: Combo, pg: Any) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=1, max_size=1, max_uses=3)
    pids = [await _pid_of_next_lease(combo, pool) for _ in range(7)]
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5]
    assert len({pids[0], pids[3], pids[6]}) == 3
    await admin.wait_gone(pids[0])
    await admin.wait_gone(pids[3])


@run_async
async def test_expire_replaces_idle_connections_now_and_leased_ones_on_return(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=2, max_size=2)
    a, b = await asyncio.gather(combo.acquire(pool), combo.acquire(pool))
    pid_a, pid_b = combo.backend_pid(a), combo.backend_pid(b)
    await combo.release(pool, b)
    await eventually(lambda: pool.stats().idle == 1)
    await combo.expire(pool)
    await admin.wait_gone(pid_b)  # the idle one goes at once
    assert await admin.alive(pid_a)  # the leased one is left alone...
    assert await combo.query_value(a, "SELECT 1") == 1
    c = await combo.acquire(pool)
    assert combo.backend_pid(c) not in (pid_a, pid_b)
    await combo.release(pool, a)  # ...until it comes back
    await admin.wait_gone(pid_a)
    d = await combo.acquire(pool)
    assert combo.backend_pid(d) not in (pid_a, pid_b)
    for conn in (c, d):
        assert await combo.query_value(conn, "SELECT 1") == 1
        await combo.release(pool, conn)
    await eventually(lambda: pool.stats().size == 2)


@run_async
async def test_check_on_checkout_replaces_a_connection_whose_backend_died_while_idle(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=1, max_size=1, check_window=0)
    dead = await _pid_of_next_lease(combo, pool)
    await admin.terminate(dead)
    conn = await combo.acquire(pool, timeout=5)
    assert combo.backend_pid(conn) != dead
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)
    s = pool.stats()
    assert s.connections_lost == 1
    assert s.size == 1


@run_async
async def test_check_pings_idle_connections_and_replaces_dead_ones(combo: Combo, pg: Any) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=2, max_size=2, check_window=None)
    a, b = await asyncio.gather(combo.acquire(pool), combo.acquire(pool))
    dead, alive = combo.backend_pid(a), combo.backend_pid(b)
    await combo.release(pool, a)
    await combo.release(pool, b)
    await eventually(lambda: pool.stats().idle == 2)
    await admin.terminate(dead)
    await combo.check(pool)
    await eventually(lambda: pool.stats().idle == 2)
    s = pool.stats()
    assert s.connections_lost == 1
    pids = set()
    held = await asyncio.gather(combo.acquire(pool), combo.acquire(pool))
    for conn in held:
        assert await combo.query_value(conn, "SELECT 1") == 1
        pids.add(combo.backend_pid(conn))
    assert alive in pids
    assert dead not in pids
    for conn in held:
        await combo.release(pool, conn)


@run_async
async def test_a_connection_whose_backend_died_while_idle_is_never_handed_out_twice(
    combo: Combo, pg: Any
) -> None:
    # No health check on checkout: a driver that cannot tell the backend died may hand the
    # dead connection out once; the borrower gets a driver error, and on release the pool
    # must drop it and serve working connections from then on.
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=1, max_size=2, check_window=None)
    dead = await _pid_of_next_lease(combo, pool)
    await admin.terminate(dead)
    conn = await combo.acquire(pool)
    try:
        if combo.backend_pid(conn) == dead:
            with pytest.raises(combo.driver_errors) as info:
                await combo.query_value(conn, "SELECT 1")
            assert not isinstance(info.value, PoolError)
    finally:
        await combo.release(pool, conn)
    for _ in range(4):
        held = await asyncio.gather(combo.acquire(pool), combo.acquire(pool))
        for c in held:
            assert combo.backend_pid(c) != dead
            assert await combo.query_value(c, "SELECT 1") == 1
        for c in held:
            await combo.release(pool, c)
    assert pool.stats().connections_lost == 1
    await eventually(lambda: pool.stats().in_use == 0, what="background resets finish")


@run_async
async def test_a_connection_whose_backend_is_terminated_mid_query_is_discarded(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    conn = await combo.acquire(pool)
    dead = combo.backend_pid(conn)
    query = asyncio.create_task(combo.query_value(conn, "SELECT pg_sleep(5)"))
    await admin.wait_running(dead, "pg_sleep")
    await admin.terminate(dead)
    with pytest.raises(combo.driver_errors):
        await asyncio.wait_for(query, 5)
    await combo.release(pool, conn)
    s = pool.stats()
    assert s.connections_lost == 1
    assert s.in_use == 0
    for _ in range(3):
        assert await _pid_of_next_lease(combo, pool) not in (dead, None)
    await eventually(lambda: pool.stats().size == 1)


@run_async
async def test_a_waiter_is_served_when_the_connection_it_waited_for_is_retired_on_return(
    combo: Combo, pg: Any
) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1, max_uses=1)
    holder = await combo.acquire(pool)
    old = combo.backend_pid(holder)
    waiter = asyncio.create_task(combo.acquire(pool, timeout=5))
    await eventually(lambda: pool.stats().waiting == 1)
    await combo.release(pool, holder)  # used up: retired, and a replacement is opened
    conn = await asyncio.wait_for(waiter, 6)
    assert combo.backend_pid(conn) != old
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)
    assert pool.stats().timeouts == 0


@run_async
async def test_a_waiter_is_served_when_the_connection_it_waited_for_comes_back_broken(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=1, max_size=1)
    holder = await combo.acquire(pool)
    old = combo.backend_pid(holder)
    waiter = asyncio.create_task(combo.acquire(pool, timeout=5))
    await eventually(lambda: pool.stats().waiting == 1)
    await admin.terminate(old)
    with pytest.raises(combo.driver_errors):
        await combo.query_value(holder, "SELECT 1")
    await combo.release(pool, holder)
    conn = await asyncio.wait_for(waiter, 6)
    assert combo.backend_pid(conn) != old
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)
    s = pool.stats()
    assert (s.timeouts, s.connections_lost) == (0, 1)
