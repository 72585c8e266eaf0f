"""The null pools of the psycopg_pool façade: a connection per request, none kept idle."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from psycopg_pool_harness import Side, each_side, eventually

from pgmarina.compat import psycopg_pool as facade


async def _queue_behind(side: Side, pool: Any) -> asyncio.Task[Any]:
    """A request that has to wait for the connection now out (max_size reached)."""

    async def use() -> tuple[int, str]:
        async with side.connection(pool, timeout=5) as conn:
            return conn.pid, await conn.value("SHOW timezone")

    task = asyncio.ensure_future(use())
    await eventually(lambda: pool.get_stats()["requests_waiting"] == 1, what="queued")
    return task


@each_side
async def test_a_null_pool_opens_a_new_connection_per_request_and_keeps_none(
    side: Side, pg: Any
) -> None:
    pool = await side.opened(pg.dsn, null=True, max_size=2)
    async with side.connection(pool) as one, side.connection(pool) as two:
        pids = {one.pid, two.pid}
    assert len(pids) == 2
    assert one.raw.closed and two.raw.closed  # closed as they came back: nobody waited
    stats = pool.get_stats()
    assert (stats["pool_size"], stats["pool_available"]) == (0, 0)
    async with side.connection(pool) as three:
        assert three.pid not in pids


@each_side
async def test_a_null_pool_hands_a_returned_connection_to_a_waiting_request_after_reset(
    side: Side, pg: Any
) -> None:
    resets: list[Any] = []
    reset = side.hook(resets, sql="SET timezone TO 'UTC'", commit=True)
    pool = await side.opened(pg.dsn, null=True, max_size=1, reset=reset)
    async with side.connection(pool) as conn:
        waiter = await _queue_behind(side, pool)
        assert resets == []
        await conn.execute("SET timezone TO '+2:00'")
        pid = conn.pid
    got_pid, timezone = await waiter
    assert got_pid == pid  # the same connection, handed on
    assert timezone == "UTC"  # after the reset
    assert len(resets) == 1  # and not reset again to be closed
    assert pool.get_stats()["pool_size"] == 0


@each_side
async def test_a_null_pool_rolls_back_before_handing_on(
    side: Side, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    pool = await side.opened(pg.dsn, null=True, max_size=1)
    conn = await side.getconn(pool)
    waiter = await _queue_behind(side, pool)
    await conn.execute("SELECT 1")
    assert conn.status == "INTRANS"
    pid = conn.pid
    await side.putconn(pool, conn)
    assert (await waiter)[0] == pid
    assert ["INTRANS" in r.getMessage() for r in caplog.records] == [True]


@each_side
async def test_a_null_pool_with_a_closed_connection_gives_the_waiter_a_new_one(
    side: Side, pg: Any
) -> None:
    pool = await side.opened(pg.dsn, null=True, max_size=1)
    conn = await side.getconn(pool)
    waiter = await _queue_behind(side, pool)
    pid = conn.pid
    await conn.close()
    await side.putconn(pool, conn)
    assert (await waiter)[0] != pid
    assert pool.get_stats()["returns_bad"] == 1


@each_side
async def test_a_null_pool_queues_beyond_max_size_and_refuses_beyond_max_waiting(
    side: Side, pg: Any
) -> None:
    pool = await side.opened(pg.dsn, null=True, max_size=1, max_waiting=1)
    conn = await side.getconn(pool)
    waiter = await _queue_behind(side, pool)
    with pytest.raises(facade.TooManyRequests, match=pool.name):
        await side.getconn(pool)
    await side.putconn(pool, conn)
    await waiter
    assert pool.get_stats()["requests_errors"] == 1


@each_side
async def test_a_null_pool_without_max_size_has_no_limit(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, null=True)
    assert (pool.min_size, pool.max_size) == (0, 0)
    conns = [await side.getconn(pool, timeout=5) for _ in range(12)]
    assert len({c.pid for c in conns}) == 12
    assert pool.get_stats()["pool_max"] == 0
    for conn in conns:
        await side.putconn(pool, conn)
    assert pool.get_stats()["pool_size"] == 0


@each_side
async def test_a_null_pool_wait_makes_one_connection_and_keeps_it_not(
    side: Side, pg: Any
) -> None:
    pool = side.make(pg.dsn, null=True)
    await side.call(pool.open)
    await side.call(pool.wait, 5)
    stats = pool.get_stats()
    assert stats["connections_num"] == 1
    assert stats["pool_size"] == 0
    assert stats["requests_num"] == 0  # the test connection was no request


@each_side
async def test_a_null_pool_wait_on_an_unreachable_server_times_out_and_closes(
    side: Side,
) -> None:
    from test_psycopg_pool_facade_api import _dead_dsn

    pool = side.make(_dead_dsn(), null=True)
    await side.call(pool.open)
    with pytest.raises(facade.PoolTimeout):
        await side.call(pool.wait, 0.3)
    assert pool.closed


@each_side
async def test_a_null_pools_check_does_nothing_and_resize_keeps_min_size_zero(
    side: Side, pg: Any
) -> None:
    pool = await side.opened(pg.dsn, null=True, max_size=2)
    await side.call(pool.check)
    await side.call(pool.resize, 0, 3)
    assert (pool.min_size, pool.max_size) == (0, 3)
    for lo, hi in [(1, None), (-1, None), (0, -2)]:
        with pytest.raises(ValueError):
            await side.call(pool.resize, lo, hi)
    await side.call(pool.resize, 0)
    assert pool.max_size == 0
    conns = [await side.getconn(pool, timeout=5) for _ in range(4)]  # no limit any more
    for conn in conns:
        await side.putconn(pool, conn)


@each_side
async def test_close_returns_on_a_null_pool_closes_the_connection(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, null=True, close_returns=True)
    conn = await side.getconn(pool)
    await conn.close()
    assert conn.raw.closed
    assert pool.get_stats()["pool_size"] == 0


@each_side
async def test_a_null_pool_runs_configure_on_each_new_connection(side: Side, pg: Any) -> None:
    inits: list[Any] = []
    configure = side.hook(inits, sql="SET timezone TO 'UTC'", commit=True)
    pool = await side.opened(pg.dsn, null=True, wait=False, configure=configure)
    for n in range(1, 4):
        async with side.connection(pool) as conn:
            assert len(inits) == n
            assert await conn.value("SHOW timezone") == "UTC"


@each_side
async def test_a_null_pool_replaces_connections_past_max_lifetime(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, null=True, max_size=1, max_lifetime=0.3)
    conn = await side.getconn(pool)
    waiter = await _queue_behind(side, pool)
    pid = conn.pid
    await asyncio.sleep(0.35)
    await side.putconn(pool, conn)  # past its lifetime: not handed on
    assert (await waiter)[0] != pid
