"""The conformance ideas of the native pools, run on the psycopg_pool façade.

Sizing, timeouts, broken connections, a server restart, cancellation and close, on both
sides (threads and asyncio), counting the server's backends through a side connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg
import pytest
from psycopg_pool_harness import Side, each_side, eventually, terminate, unique

from pgmarina.compat import psycopg_pool as facade


async def backends(admin: psycopg.AsyncConnection[Any], app: str) -> int:
    cur = await admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app]
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def app_pool(side: Side, server: Any, *, wait: bool = True, **kwargs: Any) -> Any:
    """A pool whose connections carry a unique application_name (``pool.app``)."""
    app = unique("app")
    kwargs.setdefault("kwargs", {"application_name": app})
    pool = await side.opened(server.dsn, wait=wait, **kwargs)
    pool.app = app  # type: ignore[attr-defined]  # the test's own label
    return pool


# ---------------------------------------------------------------------------------------------
# sizing


@each_side
async def test_the_pool_grows_to_max_size_under_demand_and_never_beyond(
    side: Side, pg: Any
) -> None:
    admin = await side.admin(pg)
    pool = await app_pool(side, pg, min_size=1, max_size=3)
    assert await backends(admin, pool.app) == 1
    held = [await side.getconn(pool, timeout=5) for _ in range(3)]
    assert await backends(admin, pool.app) == 3
    waiter = side.spawn(pool.getconn, 5)
    await eventually(lambda: pool.get_stats()["requests_waiting"] == 1)
    await asyncio.sleep(0.2)
    assert await backends(admin, pool.app) == 3
    assert pool.get_stats()["pool_size"] == 3
    await side.putconn(pool, held.pop())
    held.append(await waiter)
    for conn in held:
        await side.putconn(pool, conn)


@pytest.mark.slow
@each_side
async def test_connections_above_min_size_close_after_max_idle(side: Side, pg: Any) -> None:
    admin = await side.admin(pg)
    pool = await app_pool(side, pg, min_size=1, max_size=3, max_idle=0.3)
    held = [await side.getconn(pool, timeout=5) for _ in range(3)]
    for conn in held:
        await side.putconn(pool, conn)
    assert pool.get_stats()["pool_size"] == 3
    await eventually(lambda: pool.get_stats()["pool_size"] == 1, timeout=5, what="shrunk")
    await eventually(lambda: _count_is(admin, pool.app, 1), what="backends closed")


async def _count_is(admin: psycopg.AsyncConnection[Any], app: str, n: int) -> bool:
    return await backends(admin, app) == n


@each_side
async def test_waiting_requests_are_served_first_come_first_served(side: Side, pg: Any) -> None:
    pool = await app_pool(side, pg, min_size=1, max_size=1)
    held = await side.getconn(pool)
    order: list[int] = []

    async def request(n: int) -> None:
        async with side.connection(pool, timeout=5):
            order.append(n)

    tasks = []
    for n in range(4):
        tasks.append(asyncio.ensure_future(request(n)))
        await eventually(lambda n=n: pool.get_stats()["requests_waiting"] == n + 1)
    await side.putconn(pool, held)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------
# timeouts


@each_side
async def test_a_request_times_out_after_its_timeout(side: Side, pg: Any) -> None:
    pool = await app_pool(side, pg, min_size=1, max_size=1, timeout=5)
    held = await side.getconn(pool)
    for timeout in (0.2, 0.05):
        start = time.monotonic()
        with pytest.raises(facade.PoolTimeout):
            await side.getconn(pool, timeout=timeout)
        assert timeout <= time.monotonic() - start < timeout + 0.4
    pool.timeout = 0.1  # the default changes for the next requests
    start = time.monotonic()
    with pytest.raises(facade.PoolTimeout):
        async with side.connection(pool):
            pass
    assert 0.1 <= time.monotonic() - start < 0.5
    await side.putconn(pool, held)
    assert pool.get_stats()["requests_errors"] == 3


@each_side
async def test_a_request_that_timed_out_swallows_no_connection(side: Side, pg: Any) -> None:
    pool = await app_pool(side, pg, min_size=2, max_size=2)
    one, two = await side.getconn(pool), await side.getconn(pool)
    with pytest.raises(facade.PoolTimeout):
        await side.getconn(pool, timeout=0.1)
    await side.putconn(pool, one)
    await side.putconn(pool, two)
    stats = pool.get_stats()
    assert (stats["pool_available"], stats["requests_waiting"]) == (2, 0)
    conns = [await side.getconn(pool, timeout=1) for _ in range(2)]
    for conn in conns:
        await side.putconn(pool, conn)


def test_the_timeout_setter_checks_its_value() -> None:
    pool = facade.ConnectionPool("", open=False)
    for bad, error in [(-1, ValueError), ("1", TypeError), (float("nan"), ValueError)]:
        with pytest.raises(error, match="timeout"):
            pool.timeout = bad  # type: ignore[assignment]
    assert pool.timeout == 30


# ---------------------------------------------------------------------------------------------
# broken connections


@each_side
async def test_a_connection_killed_in_use_fails_its_query_and_is_replaced(
    side: Side, pg: Any
) -> None:
    admin = await side.admin(pg)
    pool = await app_pool(side, pg, min_size=1, max_size=1)
    with pytest.raises(psycopg.OperationalError):
        async with side.connection(pool) as conn:
            pid = conn.pid
            await terminate(admin, pid)
            await conn.execute("SELECT 1")
    async with side.connection(pool, timeout=5) as conn:
        assert conn.pid != pid
        assert await conn.value("SELECT 1") == 1


@pytest.mark.slow
@each_side
async def test_a_connection_killed_while_idle_is_checked_and_replaced_before_use(
    side: Side, pg: Any
) -> None:
    """Without a check callback, pgmarina's check window: idle over two seconds, pinged."""
    admin = await side.admin(pg)
    pool = await app_pool(side, pg, min_size=1, max_size=1)
    async with side.connection(pool) as conn:
        pid = conn.pid
    await terminate(admin, pid)
    await asyncio.sleep(2.2)
    async with side.connection(pool, timeout=5) as conn:
        assert conn.pid != pid
        assert await conn.value("SELECT 1") == 1
    assert pool.get_stats()["connections_lost"] == 1


@each_side
async def test_a_connection_cut_by_the_network_is_replaced(
    side: Side, pg: Any, fault_proxy: Any
) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    dsn = f"postgresql://{pg.user}@{proxy.host}:{proxy.port}/{pg.dbname}"
    pool = await side.opened(dsn, min_size=1, max_size=1, check=side.cls().check_connection)
    async with side.connection(pool) as conn:
        pid = conn.pid
    proxy.reset_all()
    async with side.connection(pool, timeout=5) as conn:
        assert conn.pid != pid
        assert await conn.value("SELECT 7") == 7


# ---------------------------------------------------------------------------------------------
# a server that goes away


@each_side
async def test_a_server_that_refuses_the_login_fails_requests_at_once(
    side: Side, pg: Any
) -> None:
    """pgmarina's fail fast through the façade: no waiting out the timeout for a
    database that does not exist; the cause is psycopg's own error."""
    dsn = f"postgresql://{pg.user}@{pg.host}:{pg.port}/{unique('nodb')}"
    pool = side.make(dsn, min_size=1, timeout=20)
    await side.call(pool.open)
    await eventually(lambda: pool.get_stats()["connections_errors"] >= 1)
    start = time.monotonic()
    with pytest.raises(facade.PoolTimeout) as info:
        await side.getconn(pool)
    assert time.monotonic() - start < 2
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert "does not exist" in str(info.value)


@pytest.mark.slow
@pytest.mark.private_cluster
@each_side
async def test_the_pool_rides_out_a_server_restart(side: Side, private_pg: Any) -> None:
    pool = await side.opened(private_pg.dsn, min_size=2, max_size=2,
                             check=side.cls().check_connection)
    async with side.connection(pool) as conn:
        assert await conn.value("SELECT 1") == 1
    await asyncio.to_thread(private_pg.restart)
    async with side.connection(pool, timeout=10) as conn:
        assert await conn.value("SELECT 2") == 2
    await side.call(pool.wait, 10)
    stats = pool.get_stats()
    assert stats["pool_size"] == 2
    assert stats["connections_lost"] >= 1


@pytest.mark.slow
@pytest.mark.private_cluster
@each_side
async def test_requests_made_while_the_server_is_down_are_served_when_it_is_back(
    side: Side, private_pg: Any
) -> None:
    pool = await side.opened(private_pg.dsn, min_size=1, max_size=1,
                             check=side.cls().check_connection)
    await asyncio.to_thread(private_pg.stop)
    request = side.spawn(pool.getconn, 15)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(private_pg.start)
    conn = await request
    try:
        cur = conn.execute("SELECT 3")
        if side.is_async:
            cur = await cur
            assert await cur.fetchone() == (3,)
        else:
            assert cur.fetchone() == (3,)
    finally:
        await side.putconn(pool, conn)


# ---------------------------------------------------------------------------------------------
# cancellation


def test_a_cancelled_waiter_loses_no_connection(pg: Any) -> None:
    async def body() -> None:
        async with facade.AsyncConnectionPool(pg.dsn, min_size=2, max_size=2) as pool:
            await pool.wait()
            one, two = await pool.getconn(), await pool.getconn()
            waiters = [asyncio.ensure_future(pool.getconn()) for _ in range(5)]
            await eventually(lambda: pool.get_stats()["requests_waiting"] == 5)
            for task in waiters:
                task.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            assert all(t.cancelled() for t in waiters)
            await pool.putconn(one)
            await pool.putconn(two)
            stats = pool.get_stats()
            assert (stats["pool_available"], stats["requests_waiting"]) == (2, 0)
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")

    asyncio.run(body())


def test_a_borrower_cancelled_mid_query_gives_its_connection_back(pg: Any) -> None:
    async def body() -> None:
        async with facade.AsyncConnectionPool(pg.dsn, min_size=1, max_size=1) as pool:
            started = asyncio.Event()

            async def borrower() -> None:
                async with pool.connection() as conn:
                    started.set()
                    await conn.execute("SELECT pg_sleep(5)")

            task = asyncio.ensure_future(borrower())
            await asyncio.wait_for(started.wait(), 5)
            await asyncio.sleep(0.2)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            async with pool.connection(timeout=5) as conn:
                cur = await conn.execute("SELECT 1")
                assert await cur.fetchone() == (1,)
            assert pool.get_stats()["pool_size"] == 1

    asyncio.run(body())


def test_a_cancelled_check_gives_its_connection_back(pg: Any) -> None:
    async def body() -> None:
        entered = asyncio.Event()

        async def slow_check(conn: Any) -> None:
            entered.set()
            await asyncio.sleep(10)

        async with facade.AsyncConnectionPool(
            pg.dsn, min_size=1, max_size=1, check=slow_check
        ) as pool:
            task = asyncio.ensure_future(pool.getconn())
            await asyncio.wait_for(entered.wait(), 5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await eventually(lambda: pool.get_stats()["pool_available"] == 1)
            assert pool._leases == {}

    asyncio.run(body())


def test_a_thread_interrupted_inside_its_block_gives_its_connection_back(pg: Any) -> None:
    class Interrupted(BaseException):
        pass

    with facade.ConnectionPool(pg.dsn, min_size=1, max_size=1) as pool:
        with pytest.raises(Interrupted), pool.connection() as conn:
            conn.execute("SELECT 1")
            pid = conn.info.backend_pid
            raise Interrupted
        with pool.connection(timeout=2) as conn:
            assert conn.info.backend_pid == pid
            assert conn.info.transaction_status.name == "IDLE"


# ---------------------------------------------------------------------------------------------
# close


@each_side
async def test_close_fails_the_waiting_requests_with_pool_closed(side: Side, pg: Any) -> None:
    pool = await app_pool(side, pg, min_size=1, max_size=1)
    held = await side.getconn(pool)
    waiter = side.spawn(pool.getconn, 10)
    await eventually(lambda: pool.get_stats()["requests_waiting"] == 1)
    await side.call(pool.close)
    with pytest.raises(facade.PoolClosed):
        await waiter
    await side.putconn(pool, held)
    assert held.raw.closed


@each_side
async def test_close_returns_at_once_and_leaves_no_backend_behind(side: Side, pg: Any) -> None:
    admin = await side.admin(pg)
    pool = await app_pool(side, pg, min_size=3)
    held = await side.getconn(pool)
    start = time.monotonic()
    await side.call(pool.close)
    assert time.monotonic() - start < 1.0  # it does not wait for the connection out
    # (A backend leaves pg_stat_activity a moment after its client hung up.)
    await eventually(lambda: _count_is(admin, pool.app, 1), what="the idle ones closed")
    assert await held.value("SELECT 8") == 8  # still usable by its borrower
    await side.putconn(pool, held)
    await eventually(lambda: _count_is(admin, pool.app, 0), what="no backend left")
    assert pool.get_stats()["pool_size"] == 0
