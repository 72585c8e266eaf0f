"""``AsyncPool.acquire()`` written the asyncpg way, on a real server (asyncpg and psycopg).

Day one issue, item 1: ``async with pool.acquire() as conn:`` failed with "TypeError:
'coroutine' object does not support the asynchronous context manager protocol" and a
"never awaited" warning.  ``acquire()`` now returns an object that is both awaitable (pair
it with ``release()``) and an async context manager (a plain release at the end of the
block), that takes nothing from the pool until it is used, and that loses no connection
whichever await a cancellation lands on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from helpers import eventually
from pgmarina import AsyncPool, PoolError

DRIVERS = ["asyncpg", "psycopg"]

by_driver = pytest.mark.parametrize("driver", DRIVERS)


def run_async(fn: Callable[..., Awaitable[Any]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def test(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]

    return test


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def opened(pg: Any, driver: str, **options: Any) -> AsyncIterator[tuple[AsyncPool, Admin]]:
    """An open pool whose connections carry a unique application_name, and an admin link."""
    app = unique("acq")
    options.setdefault("timeout", 10.0)
    if driver == "asyncpg":
        options["server_settings"] = {"application_name": app}
    else:
        options["application_name"] = app
    pool = AsyncPool(pg.dsn, driver=driver, **options)
    admin = await asyncpg.connect(**pg.connect_kwargs(), timeout=10)
    try:
        await pool.open(wait=True)
        yield pool, Admin(admin, app)
    finally:
        try:
            await pool.close(timeout=1.0)
            if pool.stats().size:
                pool.terminate()
        finally:
            await admin.close()


class Admin:
    def __init__(self, conn: asyncpg.Connection, app: str) -> None:
        self.conn = conn
        self.app = app

    async def backends(self) -> int:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        return int(await self.conn.fetchval(sql, self.app))

    async def table_exists(self, name: str) -> bool:
        return await self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)  # type: ignore[no-any-return]


async def select_one(conn: Any, driver: str) -> Any:
    if driver == "asyncpg":
        return await conn.fetchval("SELECT 1")
    cur = await conn.execute("SELECT 1")
    row = await cur.fetchone()
    return row[0]


async def assert_nothing_lost(pool: AsyncPool, admin: Admin, driver: str) -> None:
    """Nothing is lent out or half-open, every server backend is one the pool counts, and
    ``async with pool.acquire()`` still serves."""
    await eventually(
        lambda: (s := pool.stats()).in_use == 0 and s.waiting == 0 and s.connecting == 0,
        what=f"pool settles with nothing lent out: {pool.stats()}",
    )
    s = pool.stats()
    assert s.size == s.idle
    await eventually(
        lambda: _same(admin.backends(), pool.stats().size),
        what="server backends match the pool's size",
    )
    async with pool.acquire(timeout=5) as conn:
        assert await select_one(conn, driver) == 1
    assert pool.stats().in_use == 0


async def _same(count: Awaitable[int], size: int) -> bool:
    return await count == size


# ---------------------------------------------------------------------------------------------
# the two spellings


@by_driver
@run_async
async def test_async_with_pool_acquire_leases_for_the_block_and_releases_after(
    pg: Any, driver: str
) -> None:
    """Regression: ``async with pool.acquire()`` raised TypeError ('coroutine' object does
    not support the asynchronous context manager protocol)."""
    async with opened(pg, driver, min_size=1, max_size=2) as (pool, admin):
        async with pool.acquire() as conn:
            assert await select_one(conn, driver) == 1
            assert pool.stats().in_use == 1
        assert conn.released
        s = pool.stats()
        assert (s.in_use, s.idle, s.acquires) == (0, 1, 1)
        await assert_nothing_lost(pool, admin, driver)


@by_driver
@run_async
async def test_awaited_acquire_still_pairs_with_release(pg: Any, driver: str) -> None:
    async with opened(pg, driver, min_size=1, max_size=2) as (pool, admin):
        conn = await pool.acquire(timeout=5)
        assert await select_one(conn, driver) == 1
        assert pool.stats().in_use == 1
        await pool.release(conn)
        assert conn.released
        assert pool.stats().in_use == 0
        await assert_nothing_lost(pool, admin, driver)


@by_driver
@run_async
async def test_async_with_pool_acquire_ends_with_a_plain_release_that_commits_nothing(
    pg: Any, driver: str
) -> None:
    """As asyncpg's pool does: the block's end releases; an open transaction is rolled back
    (``pool.connection()`` is the spelling that commits on psycopg)."""
    table = unique("acq_table")
    async with opened(pg, driver, min_size=1, max_size=1) as (pool, admin):
        try:
            async with pool.acquire() as conn:
                if driver == "asyncpg":
                    await conn.execute(f"BEGIN; CREATE TABLE {table} (n int)")
                else:
                    await conn.execute(f"CREATE TABLE {table} (n int)")  # opens a transaction
            assert not await admin.table_exists(table)
        finally:
            await admin.conn.execute(f"DROP TABLE IF EXISTS {table}")
        await assert_nothing_lost(pool, admin, driver)


@by_driver
@run_async
async def test_an_acquire_never_awaited_takes_nothing_and_warns_of_nothing(
    pg: Any, driver: str
) -> None:
    """Regression: a ``pool.acquire()`` that was never awaited left a "coroutine ... was
    never awaited" RuntimeWarning behind."""
    async with opened(pg, driver, min_size=1, max_size=1) as (pool, admin):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pool.acquire()
            pool.acquire(timeout=1)
            gc.collect()
        assert [str(w.message) for w in caught] == []
        s = pool.stats()
        assert (s.acquires, s.in_use, s.idle) == (0, 0, 1)
        await assert_nothing_lost(pool, admin, driver)


@by_driver
@run_async
async def test_pool_acquire_still_runs_as_a_task_as_it_did_when_it_was_a_coroutine(
    pg: Any, driver: str
) -> None:
    """``asyncio.create_task(pool.acquire())`` worked when acquire was an ``async def``; it
    keeps working (the object speaks the coroutine protocol), and so does ``wait_for``."""
    async with opened(pg, driver, min_size=1, max_size=2) as (pool, admin):
        task = asyncio.create_task(pool.acquire(timeout=5))
        conn = await task
        assert await select_one(conn, driver) == 1
        await pool.release(conn)
        conn = await asyncio.wait_for(pool.acquire(), 5)
        await pool.release(conn)
        assert "AsyncPool.acquire" in repr(task)
        await assert_nothing_lost(pool, admin, driver)


@by_driver
@run_async
async def test_one_acquire_entered_twice_is_refused_and_loses_no_connection(
    pg: Any, driver: str
) -> None:
    async with opened(pg, driver, min_size=1, max_size=2) as (pool, admin):
        ctx = pool.acquire()
        async with ctx as first:
            with pytest.raises(PoolError, match="already in use"):
                async with ctx:
                    pass  # pragma: no cover - refused before the block
            assert not first.released
            assert await select_one(first, driver) == 1
        assert first.released
        await assert_nothing_lost(pool, admin, driver)


@by_driver
@run_async
async def test_a_bad_acquire_timeout_is_refused_at_the_call(pg: Any, driver: str) -> None:
    async with opened(pg, driver, min_size=1, max_size=1) as (pool, admin):
        with pytest.raises(ValueError, match="timeout"):
            pool.acquire(timeout=-1)
        with pytest.raises(TypeError, match="timeout"):
            pool.acquire(timeout="1")  # type: ignore[arg-type]
        await assert_nothing_lost(pool, admin, driver)


# ---------------------------------------------------------------------------------------------
# cancellation at every await of ``async with pool.acquire()``


@by_driver
@run_async
async def test_cancelled_while_waiting_to_enter_async_with_pool_acquire_loses_nothing(
    pg: Any, driver: str
) -> None:
    async with opened(pg, driver, min_size=1, max_size=1) as (pool, admin):
        held = await pool.acquire()
        entered = asyncio.Event()

        async def borrower() -> None:
            async with pool.acquire(timeout=10):
                entered.set()  # pragma: no cover - cancelled before

        task = asyncio.create_task(borrower())
        await eventually(lambda: pool.stats().waiting == 1, what="the borrower queues")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not entered.is_set()
        assert pool.stats().waiting == 0
        await pool.release(held)
        await assert_nothing_lost(pool, admin, driver)


@by_driver
@run_async
async def test_cancelled_inside_the_block_of_pool_acquire_releases_the_connection(
    pg: Any, driver: str
) -> None:
    async with opened(pg, driver, min_size=1, max_size=1) as (pool, admin):
        inside = asyncio.Event()

        async def borrower() -> None:
            async with pool.acquire() as conn:
                inside.set()
                await conn.execute("SELECT pg_sleep(30)")

        task = asyncio.create_task(borrower())
        await asyncio.wait_for(inside.wait(), 5)
        await asyncio.sleep(0.05)  # the query is on the server
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_nothing_lost(pool, admin, driver)


@by_driver
@run_async
async def test_cancelled_in_the_release_at_the_end_of_pool_acquire_loses_nothing(
    pg: Any, driver: str
) -> None:
    """With no other connection idle, the block's end waits for the reset; a cancellation
    there discards the connection (its state is unknown) and the pool replaces it."""
    resetting = asyncio.Event()
    calls = 0

    async def slow_reset(conn: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            resetting.set()
            await asyncio.sleep(30)

    async with opened(pg, driver, min_size=1, max_size=1, reset=slow_reset) as (pool, admin):

        async def borrower() -> None:
            async with pool.acquire() as conn:
                await select_one(conn, driver)

        task = asyncio.create_task(borrower())
        await asyncio.wait_for(resetting.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_nothing_lost(pool, admin, driver)


@by_driver
@run_async
async def test_cancelled_in_the_check_on_entering_pool_acquire_loses_nothing(
    pg: Any, driver: str
) -> None:
    """An idle connection is checked before it is handed out (``check_window=0``); a
    cancellation during that check leaves the check to finish on its own (Reliability
    defect 1: a caller that gives up must not condemn the connection).  This check hangs, so
    ``reset_timeout`` cuts it off, and the pool replaces the connection: nothing is lost."""
    checking = asyncio.Event()
    calls = 0

    async def slow_check(conn: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            checking.set()
            await asyncio.sleep(30)

    async with opened(
        pg, driver, min_size=1, max_size=1, check_window=0, check=slow_check, reset_timeout=1
    ) as (pool, admin):
        await asyncio.sleep(0.01)  # idle for longer than check_window

        async def borrower() -> None:
            async with pool.acquire():
                pass  # pragma: no cover - cancelled before

        task = asyncio.create_task(borrower())
        await asyncio.wait_for(checking.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_nothing_lost(pool, admin, driver)
