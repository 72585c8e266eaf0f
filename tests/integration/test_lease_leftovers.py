"""What one lease leaves behind, driver by driver (Reliability issue, items 6 and 7).

The conformance suite (``test_conformance_lease_leftovers.py``) covers what every pair shares;
these are the cases only one driver has: psycopg's server cursors, psycopg2's session
characteristics kept as server settings in autocommit, asyncpg's listeners, and the memory a
lease holds for the cursors it made.  Every pool has one connection, so the next borrower gets
the connection the last one released (checked by backend pid).
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
import psycopg.rows
import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest

from pgmarina import AsyncPool, Pool


def run_async(fn: Callable[..., Awaitable[Any]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def test(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]

    return test


def _async_pool(pg: Any, **options: Any) -> AsyncPool:
    """A one-connection pool, opened (and closed) by its ``async with`` block."""
    return AsyncPool(pg.dsn, min_size=1, max_size=1, timeout=10.0, **options)


def _sync_pool(pg: Any, driver: str, **options: Any) -> Pool:
    """A one-connection pool, opened (and closed) by its ``with`` block."""
    return Pool(pg.dsn, driver=driver, min_size=1, max_size=1, timeout=10.0, **options)


# -- asyncpg --------------------------------------------------------------------------------


@run_async
async def test_asyncpg_listener_of_a_lease_that_left_a_transaction_open_is_unlistened_for_good(
    pg: Any,
) -> None:
    # The listener used to be removed before the rollback: its UNLISTEN ran inside the
    # borrower's transaction, the rollback undid it, and the backend kept listening.
    async with _async_pool(pg) as pool:
        async with pool.connection() as conn:
            pid = conn.get_server_pid()
            await conn.add_listener("pgm_left_open", lambda *args: None)
            await conn.execute("BEGIN")
        async with pool.connection() as conn:
            assert conn.get_server_pid() == pid
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0


@run_async
async def test_asyncpg_statement_prepared_under_an_earlier_lease_stays_refused_later(
    pg: Any,
) -> None:
    # asyncpg compares a release counter; leases that make nothing leave it alone, which must
    # not bring an older statement back to life.
    async with _async_pool(pg) as pool:
        async with pool.connection() as conn:
            stmt = await conn.prepare("SELECT 1")
        for _ in range(3):
            async with pool.connection() as conn:
                assert await conn.fetchval("SELECT 2") == 2
        with pytest.raises(asyncpg.InterfaceError, match="released back to the pool"):
            await stmt.fetchval()


# -- psycopg --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "thread"])
def test_psycopg_with_hold_cursor_of_a_released_lease_is_closed_on_the_server(
    pg: Any, kind: str
) -> None:
    sql = "SELECT count(*) FROM pg_cursors"

    async def body() -> None:
        async with _async_pool(pg, driver="psycopg") as pool:
            async with pool.connection() as conn:
                pid = conn.info.backend_pid
                cur = conn.cursor("held", withhold=True)
                await cur.execute("SELECT generate_series(1, 10)")
                assert await cur.fetchone() == (1,)
            async with pool.connection() as conn:
                assert conn.info.backend_pid == pid
                assert await (await conn.execute(sql)).fetchone() == (0,)
            with pytest.raises(psycopg.InterfaceError):
                await cur.fetchone()

    if kind == "async":
        asyncio.run(body())
        return
    with _sync_pool(pg, "psycopg") as pool:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
            cur = conn.cursor("held", withhold=True)
            cur.execute("SELECT generate_series(1, 10)")
            assert cur.fetchone() == (1,)
        with pool.connection() as conn:
            assert conn.info.backend_pid == pid
            assert conn.execute(sql).fetchone() == (0,)
        with pytest.raises(psycopg.InterfaceError):
            cur.fetchone()


def test_psycopg_server_cursor_of_a_released_lease_cannot_fail_the_next_borrowers_transaction(
    pg: Any,
) -> None:
    # Its FETCH used to reach the next borrower's session, where the cursor no longer exists:
    # the server error aborted that borrower's transaction.
    with _sync_pool(pg, "psycopg") as pool:
        with pool.connection() as conn:
            cur = conn.cursor("streaming")
            cur.execute("SELECT generate_series(1, 10)")
            assert cur.fetchone() == (1,)
        with pool.connection() as conn:
            conn.execute("CREATE TEMP TABLE mine (x int)")
            conn.execute("INSERT INTO mine VALUES (1)")
            with pytest.raises(psycopg.InterfaceError):
                cur.fetchone()
            assert conn.execute("SELECT count(*) FROM mine").fetchone() == (1,)


def test_psycopg_set_autocommit_method_on_a_lease_is_undone_on_release(pg: Any) -> None:
    with _sync_pool(pg, "psycopg") as pool:
        with pool.connection() as conn:
            conn.set_autocommit(True)
            conn.set_read_only(True)
        with pool.connection() as conn:
            assert (conn.autocommit, conn.read_only) == (False, None)


@pytest.mark.parametrize("kind", ["async", "thread"])
def test_psycopg_row_factory_and_prepare_settings_a_borrower_assigned_do_not_reach_the_next(
    pg: Any, kind: str
) -> None:
    async def body() -> None:
        async with _async_pool(pg, driver="psycopg") as pool:
            async with pool.connection() as conn:
                conn.row_factory = psycopg.rows.dict_row
                conn.prepare_threshold = None
                assert await (await conn.execute("SELECT 1 AS one")).fetchone() == {"one": 1}
            async with pool.connection() as conn:
                assert await (await conn.execute("SELECT 1 AS one")).fetchone() == (1,)
                assert conn.prepare_threshold == 5

    if kind == "async":
        asyncio.run(body())
        return
    with _sync_pool(pg, "psycopg") as pool:
        with pool.connection() as conn:
            conn.row_factory = psycopg.rows.dict_row
            conn.cursor_factory = psycopg.ClientCursor
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
        with pool.connection() as conn:
            cur = conn.execute("SELECT 1 AS one")
            assert (type(cur), cur.fetchone()) == (psycopg.Cursor, (1,))


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_a_lease_closes_its_cursors_at_release_but_does_not_keep_them_alive(
    pg: Any, driver: str
) -> None:
    # A cursor kept past the block used to run on the next borrower's connection; closing
    # them at release must not mean that a long lease holds every cursor (and its results).
    with _sync_pool(pg, driver) as pool:
        with pool.connection() as conn:
            refs = []
            for _ in range(100):
                cur = conn.cursor()
                cur.execute("SELECT 1")
                refs.append(weakref.ref(cur))
            del cur
            assert all(r() is None for r in refs)
            kept = conn.cursor()
        assert kept.closed


# -- psycopg2 -------------------------------------------------------------------------------


def test_psycopg2_read_only_set_in_autocommit_does_not_stay_a_server_default(pg: Any) -> None:
    # In autocommit psycopg2 keeps readonly as the session's default_transaction_read_only.
    with _sync_pool(pg, "psycopg2") as pool:
        with pool.connection() as conn:
            pid = conn.get_backend_pid()
            conn.autocommit = True
            conn.readonly = True
        with pool.connection() as conn:
            assert conn.get_backend_pid() == pid
            assert (conn.autocommit, conn.readonly) == (False, None)
            with conn.cursor() as cur:
                cur.execute("SHOW default_transaction_read_only")
                assert cur.fetchone() == ("off",)
                cur.execute("CREATE TEMP TABLE writable (x int)")


def test_psycopg2_cursor_factory_a_borrower_assigned_does_not_reach_the_next(pg: Any) -> None:
    with _sync_pool(pg, "psycopg2") as pool:
        with pool.connection() as conn:
            conn.cursor_factory = psycopg2.extras.RealDictCursor
        with pool.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 AS one")
            assert cur.fetchone() == (1,)


def test_psycopg2_legacy_set_isolation_level_autocommit_is_undone_on_release(pg: Any) -> None:
    with _sync_pool(pg, "psycopg2") as pool:
        with pool.connection() as conn:
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            assert conn.autocommit
        with pool.connection() as conn:
            assert conn.autocommit is False
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS


def test_psycopg2_with_hold_cursor_of_a_released_lease_is_closed_on_the_server(pg: Any) -> None:
    with _sync_pool(pg, "psycopg2") as pool:
        with pool.connection() as conn:
            pid = conn.get_backend_pid()
            cur = conn.cursor("held", withhold=True)
            cur.execute("SELECT generate_series(1, 10)")
            assert cur.fetchone() == (1,)
        with pool.connection() as conn:
            assert conn.get_backend_pid() == pid
            with conn.cursor() as check:
                check.execute("SELECT count(*) FROM pg_cursors")
                assert check.fetchone() == (0,)
        with pytest.raises(psycopg2.InterfaceError):
            cur.fetchone()
