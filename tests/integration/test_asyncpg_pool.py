"""AsyncPool on asyncpg against a real server: shortcuts, listeners, cancellation at every
stage, fairness, fail fast and a blackholed network.

No pytest-asyncio: each test is a plain function that runs its body with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from faultproxy import FaultProxy
from helpers import admin_of, eventually
from pgmarina import (
    AsyncPool,
    ConnectionReleasedError,
    Lease,
    PoolConnectError,
    PoolTimeout,
    unwrap,
)


def run_async(fn: Callable[..., Awaitable[Any]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def test(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]

    return test




def via(server: Any, proxy: FaultProxy) -> dict[str, Any]:
    """asyncpg connect keywords for ``server``, routed through ``proxy``."""
    return {**server.connect_kwargs(), "host": proxy.host, "port": proxy.port}


@contextlib.asynccontextmanager
async def open_pool(connect: dict[str, Any], **options: Any) -> AsyncIterator[AsyncPool]:
    """An opened AsyncPool on asyncpg; closed (and anything left over terminated) afterwards."""
    options.setdefault("timeout", 10.0)
    pool = AsyncPool(driver="asyncpg", connect_kwargs=connect, **options)
    await pool.open(wait=options.get("min_size", 1) > 0)
    try:
        yield pool
    finally:
        await pool.close(timeout=1.0)
        if pool.stats().size:
            pool.terminate()


async def assert_nothing_leaked(pool: AsyncPool) -> None:
    """Every connection is accounted for, none is lent out, and the pool still serves."""
    await eventually(
        lambda: _quiet(pool), what=f"pool settles with nothing lent out: {pool.stats()}"
    )
    s = pool.stats()
    assert s.size == s.idle + s.in_use
    async with pool.connection(timeout=5) as conn:
        assert await conn.fetchval("SELECT 1") == 1
    await eventually(lambda: pool.stats().in_use == 0)


def _quiet(pool: AsyncPool) -> bool:
    s = pool.stats()
    return s.in_use == 0 and s.waiting == 0 and s.connecting == 0 and s.size == s.idle


# --------------------------------------------------------------------------------------------
# The asyncpg API through the pool
# --------------------------------------------------------------------------------------------


@run_async
async def test_pool_shortcuts_run_each_query_on_a_leased_connection_and_give_it_back(
    pg: Any,
) -> None:
    async with admin_of(pg) as admin, open_pool(pg.connect_kwargs(), max_size=2) as pool:
        table = f"shortcut_{id(pool)}"
        await admin.execute(f"CREATE TABLE {table} (x int, y text)")
        try:
            assert await pool.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "one") == (
                "INSERT 0 1"
            )
            await pool.executemany(f"INSERT INTO {table} VALUES ($1, $2)", [(2, "two"), (3, "3")])
            rows = await pool.fetch(f"SELECT x, y FROM {table} ORDER BY x")
            assert [tuple(r) for r in rows] == [(1, "one"), (2, "two"), (3, "3")]
            row = await pool.fetchrow(f"SELECT y FROM {table} WHERE x = $1", 2)
            assert row is not None and row["y"] == "two"
            assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 3
            assert await pool.fetchval("SELECT $1::int + 1", 41) == 42
            assert await pool.fetchval("SELECT 1, 2", column=1) == 2
            s = pool.stats()
            assert (s.acquires, s.in_use) == (7, 0)
            with pytest.raises(asyncpg.UndefinedTableError):
                await pool.fetch("SELECT * FROM no_such_table_here")
            assert pool.stats().in_use == 0
        finally:
            await admin.execute(f"DROP TABLE {table}")


@run_async
async def test_pool_shortcuts_are_refused_on_a_psycopg_pool(pg: Any) -> None:
    pool = AsyncPool(pg.dsn, driver="psycopg", min_size=0)
    with pytest.raises(TypeError, match="only for asyncpg"):
        await pool.fetchval("SELECT 1")
    await pool.close()


@run_async
async def test_a_leased_connection_passes_for_an_asyncpg_connection(pg: Any) -> None:
    async with open_pool(pg.connect_kwargs()) as pool, pool.connection() as conn:
        assert isinstance(conn, asyncpg.Connection)
        assert isinstance(conn, Lease)
        assert type(unwrap(conn)) is not type(conn)
        assert isinstance(unwrap(conn), asyncpg.Connection)
        async with conn.transaction():
            assert await conn.fetchval("SELECT 7") == 7
    with pytest.raises(ConnectionReleasedError):
        await conn.fetchval("SELECT 1")


@run_async
async def test_listeners_added_through_a_lease_are_removed_on_release(pg: Any) -> None:
    got: list[str] = []
    terminated: list[Any] = []
    async with admin_of(pg) as admin, open_pool(pg.connect_kwargs(), max_size=1) as pool:
        async with pool.connection() as conn:
            pid = conn.get_server_pid()
            await conn.add_listener("pgm_chan", lambda *args: got.append(args[3]))
            conn.add_termination_listener(lambda c: terminated.append(c))
            await admin.execute("NOTIFY pgm_chan, 'while leased'")
            await eventually(lambda: got == ["while leased"])
        await admin.execute("NOTIFY pgm_chan, 'after release'")
        async with pool.connection() as conn:
            assert conn.get_server_pid() == pid  # the same connection, listening no more
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            await admin.execute("NOTIFY pgm_chan, 'next borrower'")
            await asyncio.sleep(0.2)
    assert got == ["while leased"]
    assert terminated == []  # closing the pool did not call the old borrower back


@run_async
async def test_a_callback_left_on_the_raw_connection_is_not_the_pools_business(pg: Any) -> None:
    # Listeners added on unwrap(conn) bypass the lease: the pool cannot know about them, but
    # reset="full" still unlistens on the server, so no notification reaches the callback.
    got: list[str] = []
    async with (
        admin_of(pg) as admin,
        open_pool(pg.connect_kwargs(), max_size=1, reset="full") as pool,
    ):
        async with pool.connection() as conn:
            await unwrap(conn).add_listener("pgm_raw", lambda *args: got.append(args[3]))
        await admin.execute("NOTIFY pgm_raw, 'after release'")
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        await asyncio.sleep(0.1)
    assert got == []


@pytest.mark.parametrize("reset", ["auto", "full"])
@run_async
async def test_a_transaction_object_its_borrower_abandoned_does_not_trouble_the_next(
    pg: Any, reset: str
) -> None:
    async with open_pool(pg.connect_kwargs(), max_size=1, reset=reset) as pool:
        async with pool.connection() as conn:
            pid = conn.get_server_pid()
            abandoned = conn.transaction()
            await abandoned.start()
            await conn.execute("CREATE TEMP TABLE rolled_back (x int)")
        async with pool.connection() as conn:
            assert conn.get_server_pid() == pid
            assert not conn.is_in_transaction()
            async with conn.transaction():
                assert await conn.fetchval("SELECT to_regclass('pg_temp.rolled_back')") is None
        await assert_nothing_leaked(pool)


# --------------------------------------------------------------------------------------------
# Cancellation at every stage
# --------------------------------------------------------------------------------------------


@run_async
async def test_cancelling_a_caller_waiting_in_acquire_leaks_nothing(pg: Any) -> None:
    async with open_pool(pg.connect_kwargs(), max_size=1) as pool:
        holder = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await eventually(lambda: pool.stats().waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pool.stats().waiting == 0
        await pool.release(holder)
        await assert_nothing_leaked(pool)
        assert pool.stats().size == 1


@run_async
async def test_a_waiter_cancelled_just_as_it_is_handed_a_connection_gives_it_back(
    pg: Any,
) -> None:
    async with open_pool(pg.connect_kwargs(), max_size=1) as pool:
        holder = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await eventually(lambda: pool.stats().waiting == 1)
        await pool.release(holder)  # hands the connection to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await assert_nothing_leaked(pool)
        assert pool.stats().size == 1


@run_async
async def test_cancelling_a_caller_while_its_connection_is_being_opened_leaks_nothing(
    pg: Any, pg_proxy: FaultProxy
) -> None:
    async with open_pool(via(pg, pg_proxy), min_size=0, max_size=2) as pool:
        pg_proxy.delay(0.2)
        caller = asyncio.create_task(pool.acquire())
        await eventually(lambda: pool.stats().connecting == 1)
        await asyncio.sleep(0.1)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        # The connect goes on (the next caller will want it) and parks its connection.
        await eventually(lambda: pool.stats().idle == 1, what="the connect completes")
        pg_proxy.pass_through()
        await assert_nothing_leaked(pool)
        s = pool.stats()
        assert (s.size, s.connections_opened, s.connections_failed) == (1, 1, 0)


@run_async
async def test_cancelling_a_release_during_a_full_reset_replaces_the_connection(
    pg: Any, pg_proxy: FaultProxy
) -> None:
    async with open_pool(via(pg, pg_proxy), min_size=1, max_size=1, reset="full") as pool:
        conn = await pool.acquire()
        pid = conn.get_server_pid()
        pg_proxy.delay(0.3)
        releasing = asyncio.create_task(pool.release(conn))
        await asyncio.sleep(0.1)  # the reset's round trip is under way
        assert not releasing.done()
        releasing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await releasing
        pg_proxy.pass_through()
        await assert_nothing_leaked(pool)
        async with pool.connection() as again:
            assert again.get_server_pid() != pid  # its state was unknown: discarded
        assert pool.stats().connections_opened == 2


@run_async
async def test_cancelling_a_borrower_while_its_block_rolls_back_leaks_nothing(
    pg: Any, pg_proxy: FaultProxy
) -> None:
    async with open_pool(via(pg, pg_proxy), min_size=1, max_size=1) as pool:
        leaving = asyncio.Event()
        pids: list[int] = []

        async def borrower() -> None:
            async with pool.connection() as conn:
                pids.append(conn.get_server_pid())
                await conn.execute("BEGIN")
                pg_proxy.delay(0.3)
                leaving.set()
            raise AssertionError("the release should have been cancelled")

        task = asyncio.create_task(borrower())
        await leaving.wait()
        await asyncio.sleep(0.1)  # __aexit__ is waiting for the ROLLBACK
        assert pool.stats().in_use == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pg_proxy.pass_through()
        await assert_nothing_leaked(pool)
        async with pool.connection() as conn:
            assert not conn.is_in_transaction()
            assert conn.get_server_pid() != pids[0]


@run_async
async def test_cancelling_a_borrower_mid_query_returns_the_connection_clean(pg: Any) -> None:
    async with admin_of(pg) as admin, open_pool(pg.connect_kwargs(), max_size=1) as pool:
        started = asyncio.Event()
        pids: list[int] = []

        async def borrower() -> None:
            async with pool.connection() as conn:
                pids.append(conn.get_server_pid())
                started.set()
                await conn.execute("SELECT pg_sleep(10)")

        task = asyncio.create_task(borrower())
        await started.wait()
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_nothing_leaked(pool)
        # asyncpg cancels the query on the server: the backend is idle, not still sleeping.
        await eventually(
            lambda: _not_running(admin, pids[0], "pg_sleep"), what="the query is cancelled"
        )


async def _not_running(admin: asyncpg.Connection, pid: int, fragment: str) -> bool:
    query = await admin.fetchval(
        "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid
    )
    return query is None or fragment not in query


# --------------------------------------------------------------------------------------------
# Fairness, fail fast, partitions
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@run_async
async def test_two_hundred_tasks_on_ten_connections_get_a_fair_share(pg: Any) -> None:
    async with open_pool(pg.connect_kwargs(), min_size=10, max_size=10) as pool:
        counts = [0] * 200
        stop = time.monotonic() + 2.0

        async def worker(i: int) -> None:
            while time.monotonic() < stop:
                async with pool.connection(timeout=10) as conn:
                    await conn.fetchval("SELECT 1")
                counts[i] += 1

        await asyncio.gather(*(worker(i) for i in range(200)))
        fairness = min(counts) / max(counts)
        print(
            f"\nfairness: 200 tasks on 10 connections for 2 s: {sum(counts)} cycles, "
            f"min {min(counts)} / max {max(counts)} per task = {fairness:.3f}"
        )
        assert min(counts) > 0
        assert fairness >= 0.9
        await assert_nothing_leaked(pool)


@run_async
async def test_acquire_fails_fast_while_the_server_refuses_connections_and_recovers_after(
    pg: Any, pg_proxy: FaultProxy
) -> None:
    async with open_pool(
        via(pg, pg_proxy), min_size=1, max_size=2, fail_fast_after=0.5, check_window=None
    ) as pool:
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1
        pg_proxy.stop_accepting()
        pg_proxy.reset_all()
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout) as slow:  # not failing long enough to fail fast yet
            await pool.acquire(timeout=0.3)
        assert isinstance(slow.value.__cause__, OSError)
        await asyncio.sleep(max(0.0, 0.6 - (time.monotonic() - t0)))
        for _ in range(3):
            t1 = time.monotonic()
            with pytest.raises(PoolConnectError) as fast:
                await pool.acquire(timeout=5)
            assert time.monotonic() - t1 < 0.05
            assert isinstance(fast.value.__cause__, OSError)
        assert pool.stats().connections_failed >= 2
        pg_proxy.start_accepting()
        t2 = time.monotonic()

        async def served() -> bool:
            try:
                async with pool.connection(timeout=1) as conn:
                    return bool(await conn.fetchval("SELECT 1") == 1)
            except PoolConnectError:
                return False

        await eventually(served, timeout=3, what="the pool recovers")
        assert time.monotonic() - t2 < 2.0
        await assert_nothing_leaked(pool)


@run_async
async def test_a_check_that_times_out_on_a_blackholed_connection_replaces_it(
    pg: Any, pg_proxy: FaultProxy
) -> None:
    async with open_pool(
        via(pg, pg_proxy),
        min_size=1,
        max_size=1,
        check_window=0,
        reset_timeout=0.3,
        connect_timeout=0.5,
    ) as pool:
        async with pool.connection() as conn:
            pid = conn.get_server_pid()
        pg_proxy.blackhole()
        t0 = time.monotonic()
        caller = asyncio.create_task(pool.acquire(timeout=5))
        await eventually(lambda: pool.stats().checks_failed == 1, timeout=2)
        assert 0.25 <= time.monotonic() - t0 < 1.0
        pg_proxy.pass_through()
        conn = await asyncio.wait_for(caller, 5)
        try:
            assert conn.get_server_pid() != pid
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await pool.release(conn)
        assert time.monotonic() - t0 < 3.0
        assert pool.stats().connections_lost == 1
        await assert_nothing_leaked(pool)
