"""What one lease leaves behind for the next (Reliability issue, items 6 and 7).

Item 6: psycopg and psycopg2 keep ``autocommit``, the isolation level, read only and
deferrable on the connection object, where no reset query reaches.  A borrower that switched
autocommit on handed it to the next borrower, whose failing ``with`` block then committed its
insert, with ``reset="full"`` too.  The release now restores what the connection had after
connect and ``configure``.  The per-lease ``reset_on_release(conn, "full")`` cleans the session
(``SET`` and the like) for the one lease that asks.

Item 7: a prepared statement, cursor or transaction object made under one lease ran in the next
borrower's session.  They now refuse, with the driver's own error (asyncpg's pool raises
``asyncpg.InterfaceError``; psycopg and psycopg2 say the cursor is closed) or with
``ConnectionReleasedError``, and the next borrower's transaction is untouched.

Every pool here has one connection, so the next borrower gets the very connection the last one
released; the tests check the backend pid to be sure.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
import psycopg2
import pytest
from conformance_harness import Combo, run_async, unique

from pgmarina import ConnectionReleasedError, reset_on_release

DEFAULT_SEARCH_PATH = '"$user", public'

#: What using an object made under a released lease may raise.
STALE_ERRORS = (
    ConnectionReleasedError,
    asyncpg.InterfaceError,
    psycopg.InterfaceError,
    psycopg2.InterfaceError,
)


class Boom(Exception):
    """The next borrower's block fails on purpose."""


async def _one_connection_pool(combo: Combo, pg: Any, **options: Any) -> Any:
    return await combo.make_pool(pg, min_size=1, max_size=1, **options)


async def _in_thread_if_sync(combo: Combo, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` (sync, or returning an awaitable for the async pairs) the pair's way."""
    if combo.is_async:
        result = fn()
        return await result if inspect.isawaitable(result) else result
    return await asyncio.to_thread(fn)


# -- connection attributes ------------------------------------------------------------------


def _attributes(combo: Combo, conn: Any) -> tuple[Any, ...]:
    """autocommit, isolation level, read only, deferrable, as the driver keeps them."""
    if combo.driver == "psycopg2":
        return (conn.autocommit, conn.isolation_level, conn.readonly, conn.deferrable)
    return (conn.autocommit, conn.isolation_level, conn.read_only, conn.deferrable)


async def _set_characteristics(
    combo: Combo, conn: Any, isolation: str, read_only: bool, deferrable: bool
) -> None:
    """Set the transaction characteristics the driver's documented way."""
    if combo.driver == "psycopg2":
        conn.set_session(isolation_level=isolation, readonly=read_only, deferrable=deferrable)
        return
    level = psycopg.IsolationLevel[isolation.replace(" ", "_")]
    if combo.is_async:
        await conn.set_isolation_level(level)
        await conn.set_read_only(read_only)
        await conn.set_deferrable(deferrable)
    else:
        conn.isolation_level = level
        conn.read_only = read_only
        conn.deferrable = deferrable


async def _server_characteristics(combo: Combo, conn: Any) -> tuple[str, str, str]:
    """What the server applies to a transaction the driver begins now (then rolled back)."""
    values = (
        await combo.query_value(conn, "SHOW transaction_isolation"),
        await combo.query_value(conn, "SHOW transaction_read_only"),
        await combo.query_value(conn, "SHOW transaction_deferrable"),
    )
    await _in_thread_if_sync(combo, conn.rollback)
    return values


def _configure_serializable_read_only(combo: Combo) -> Callable[[Any], Any]:
    """A ``configure`` hook that makes every new connection serializable and read only."""
    if combo.driver == "psycopg2":

        def configure_psycopg2(conn: Any) -> None:
            conn.set_session(isolation_level="SERIALIZABLE", readonly=True)

        return configure_psycopg2
    if combo.is_async:

        async def configure_async(conn: Any) -> None:
            await conn.set_isolation_level(psycopg.IsolationLevel.SERIALIZABLE)
            await conn.set_read_only(True)

        return configure_async

    def configure_sync(conn: Any) -> None:
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        conn.read_only = True

    return configure_sync


@pytest.mark.parametrize("reset", ["auto", "full"])
@run_async
async def test_a_borrowers_autocommit_is_off_again_so_the_next_failing_block_commits_nothing(
    transactional_combo: Combo, pg: Any, reset: str
) -> None:
    combo = transactional_combo
    admin = await combo.admin(pg)
    table = unique("lost")
    await admin.execute(f"CREATE TABLE {table} (x int)")
    try:
        pool = await _one_connection_pool(combo, pg, reset=reset)
        conn = await combo.acquire(pool)
        pid = combo.backend_pid(conn)
        await combo.set_autocommit(conn, True)
        await combo.release(pool, conn)

        with pytest.raises(Boom):
            async with combo.connection(pool) as conn:
                assert combo.backend_pid(conn) == pid
                assert conn.autocommit is False
                await combo.execute(conn, f"INSERT INTO {table} VALUES (1)")
                raise Boom
        assert await admin.fetchval(f"SELECT count(*) FROM {table}") == 0
    finally:
        await admin.execute(f"DROP TABLE {table}")


@pytest.mark.parametrize("reset", ["auto", "full"])
@run_async
async def test_isolation_read_only_and_deferrable_a_borrower_set_do_not_reach_the_next(
    transactional_combo: Combo, pg: Any, reset: str
) -> None:
    combo = transactional_combo
    pool = await _one_connection_pool(combo, pg, reset=reset)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    fresh = _attributes(combo, conn)
    await _set_characteristics(combo, conn, "SERIALIZABLE", True, True)
    await combo.set_autocommit(conn, True)
    assert _attributes(combo, conn) != fresh
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    assert _attributes(combo, conn) == fresh
    assert await _server_characteristics(combo, conn) == ("read committed", "off", "off")
    await combo.release(pool, conn)


@run_async
async def test_connection_attributes_come_back_to_what_configure_set_not_to_the_drivers_defaults(
    transactional_combo: Combo, pg: Any
) -> None:
    combo = transactional_combo
    pool = await _one_connection_pool(
        combo, pg, configure=_configure_serializable_read_only(combo)
    )
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    configured = _attributes(combo, conn)
    assert await _server_characteristics(combo, conn) == ("serializable", "on", "off")
    await _set_characteristics(combo, conn, "READ COMMITTED", False, False)
    await combo.set_autocommit(conn, True)
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    assert _attributes(combo, conn) == configured
    assert await _server_characteristics(combo, conn) == ("serializable", "on", "off")
    await combo.release(pool, conn)


@run_async
async def test_attributes_changed_before_a_transaction_left_open_are_restored_after_its_rollback(
    transactional_combo: Combo, pg: Any
) -> None:
    # psycopg refuses to change these inside a transaction: restoring them before the
    # rollback failed the reset and threw the connection away.
    combo = transactional_combo
    pool = await _one_connection_pool(combo, pg)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    fresh = _attributes(combo, conn)
    await _set_characteristics(combo, conn, "REPEATABLE READ", True, False)
    await combo.begin(conn)
    assert combo.in_transaction(conn)
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    assert not combo.in_transaction(conn)
    assert _attributes(combo, conn) == fresh
    await combo.release(pool, conn)
    assert pool.stats().connections_closed == 0


@run_async
async def test_a_lease_that_only_reads_connection_attributes_is_released_without_a_reset(
    transactional_combo: Combo, pg: Any
) -> None:
    combo = transactional_combo
    pool = await _one_connection_pool(combo, pg)
    async with combo.connection(pool) as conn:
        _attributes(combo, conn)
    assert pool.stats().resets == 0
    async with combo.connection(pool) as conn:
        await combo.set_autocommit(conn, True)
        await combo.set_autocommit(conn, False)
    assert pool.stats().resets == 1


# -- objects made from a lease --------------------------------------------------------------


async def _make_objects(combo: Combo, conn: Any) -> dict[str, Callable[[], Any]]:
    """Make what the lease hands out; return, per object, a call that uses it in a way
    that would touch the session (each returns an awaitable for the async pairs)."""
    insert = "INSERT INTO pg_temp.mine VALUES (666)"
    if combo.driver == "asyncpg":
        stmt = await conn.prepare("SELECT 1")
        factory = conn.cursor("SELECT 1")
        tr = conn.transaction()
        return {
            "prepared statement": stmt.fetchval,
            "cursor factory": factory.__aiter__().__anext__,
            "transaction": tr.start,
        }
    if combo.driver == "psycopg" and combo.is_async:
        cur = conn.cursor()
        ran = await conn.execute("SELECT 1")
        block = conn.transaction()
        pipeline = conn.pipeline()
        return {
            "cursor": lambda: cur.execute(insert),
            "cursor from execute": lambda: ran.execute(insert),
            "cursor results": ran.fetchall,
            "transaction": block.__aenter__,
            "pipeline": pipeline.__aenter__,
        }
    if combo.driver == "psycopg":
        cur = conn.cursor()
        ran = conn.execute("SELECT 1")
        block = conn.transaction()
        pipeline = conn.pipeline()
        return {
            "cursor": lambda: cur.execute(insert),
            "cursor from execute": lambda: ran.execute(insert),
            "cursor results": ran.fetchall,
            "transaction": block.__enter__,
            "pipeline": pipeline.__enter__,
        }
    cur = conn.cursor()
    cur.execute("SELECT 1")
    kept = conn.cursor()
    return {"cursor": lambda: cur.execute(insert), "unused cursor": lambda: kept.execute(insert)}


@run_async
async def test_objects_made_from_a_lease_refuse_to_run_in_the_next_borrowers_transaction(
    combo: Combo, pg: Any
) -> None:
    pool = await _one_connection_pool(combo, pg)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    uses = await _make_objects(combo, conn)
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    await combo.begin(conn)
    await combo.execute(conn, "CREATE TEMP TABLE mine (x int)")
    await combo.execute(conn, "INSERT INTO pg_temp.mine VALUES (1)")
    for what, use in uses.items():
        with pytest.raises(STALE_ERRORS):
            await _in_thread_if_sync(combo, use)
            pytest.fail(f"the {what} made under the last lease still works")
    # The next borrower's transaction is its own: still open, not failed, and unchanged.
    assert combo.in_transaction(conn)
    assert await combo.query_value(conn, "SELECT array_agg(x) FROM pg_temp.mine") == [1]
    await combo.release(pool, conn)


@run_async
async def test_objects_made_and_used_within_one_lease_work_as_usual(combo: Combo, pg: Any) -> None:
    pool = await _one_connection_pool(combo, pg)
    for _ in range(2):  # the second lease makes its objects after the first was released
        async with combo.connection(pool) as conn:
            if combo.driver == "asyncpg":
                stmt = await conn.prepare("SELECT 41 + 1")
                async with conn.transaction():
                    assert await stmt.fetchval() == 42
                    assert [r[0] async for r in conn.cursor("SELECT 1")] == [1]
            elif combo.is_async:
                cur = conn.cursor()
                await cur.execute("SELECT 41 + 1")
                assert await cur.fetchone() == (42,)
                ran = await conn.execute("SELECT 1")
                async with conn.transaction():
                    await ran.execute("SELECT 2")
                    assert await ran.fetchall() == [(2,)]
                async with conn.pipeline():
                    piped = await conn.execute("SELECT 3")
                assert await piped.fetchone() == (3,)
            elif combo.driver == "psycopg":

                def use_psycopg(conn: Any = conn) -> None:
                    cur = conn.cursor()
                    cur.execute("SELECT 41 + 1")
                    assert cur.fetchone() == (42,)
                    ran = conn.execute("SELECT 1")
                    with conn.transaction():
                        ran.execute("SELECT 2")
                        assert ran.fetchall() == [(2,)]
                    with conn.pipeline():
                        piped = conn.execute("SELECT 3")
                    assert piped.fetchone() == (3,)

                await asyncio.to_thread(use_psycopg)
            else:

                def use_psycopg2(conn: Any = conn) -> None:
                    cur = conn.cursor()
                    cur.execute("SELECT 41 + 1")
                    assert cur.fetchone() == (42,)
                    cur.execute("SELECT 2")
                    assert cur.fetchall() == [(2,)]

                await asyncio.to_thread(use_psycopg2)


# -- the per-lease full reset ---------------------------------------------------------------


@run_async
async def test_reset_on_release_full_cleans_the_session_of_that_lease_only(
    combo: Combo, pg: Any
) -> None:
    pool = await _one_connection_pool(combo, pg)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.run_committed(conn, "SET search_path TO nowhere")
    reset_on_release(conn, "full")
    reset_on_release(conn, "full")  # twice is once
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    assert await combo.query_value(conn, "SHOW search_path") == DEFAULT_SEARCH_PATH
    await combo.run_committed(conn, "SET search_path TO nowhere")
    await combo.release(pool, conn)

    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) == pid
    # This lease did not ask: "auto" leaves its SET, as documented.
    assert await combo.query_value(conn, "SHOW search_path") == "nowhere"
    await combo.release(pool, conn)


@run_async
async def test_reset_on_release_also_works_on_a_pool_that_does_no_reset(
    combo: Combo, pg: Any
) -> None:
    pool = await _one_connection_pool(combo, pg, reset=None)
    async with combo.connection(pool) as conn:
        await combo.run_committed(conn, "SET search_path TO nowhere")
        reset_on_release(conn, "full")
    async with combo.connection(pool) as conn:
        assert await combo.query_value(conn, "SHOW search_path") == DEFAULT_SEARCH_PATH


@run_async
async def test_reset_on_release_refuses_what_is_not_a_live_lease_or_not_full(
    combo: Combo, pg: Any
) -> None:
    pool = await _one_connection_pool(combo, pg)
    conn = await combo.acquire(pool)
    with pytest.raises(ValueError, match="mode"):
        reset_on_release(conn, "auto")
    with pytest.raises(TypeError, match="leased"):
        reset_on_release(object(), "full")
    await combo.release(pool, conn)
    assert pool.stats().resets == 0  # the refused calls noted nothing
    with pytest.raises(ConnectionReleasedError):
        reset_on_release(conn, "full")
