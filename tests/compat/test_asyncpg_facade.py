"""``pgmarina.compat.asyncpg``: asyncpg's pool API on pgmarina, against a real server.

The same ideas the native pools are held to (sizing, timeouts, broken
connections, restarts, cancellation, close), seen through asyncpg's API and
asyncpg's errors, plus the API surface itself.  asyncpg's own
``tests/test_pool.py`` runs against the façade too (``scripts/test.sh``).

No pytest-asyncio: each test is a plain function whose body runs in ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
import pytest

import pgmarina.compat.asyncpg as facade
from faultproxy import FaultProxy
from helpers import admin_of, eventually, refused_elsewhere
from pgmarina import PoolStats
from pgmarina.compat.asyncpg import Pool, PoolConnectionProxy, create_pool


def run_async(fn: Callable[..., Awaitable[Any]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def test(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]

    return test


@contextlib.asynccontextmanager
async def started(server: Any, **options: Any) -> AsyncIterator[Pool]:
    """A started façade pool on ``server`` (asyncpg's keywords); terminated afterwards."""
    options.setdefault("min_size", 1)
    options.setdefault("max_size", 2)
    pool = await create_pool(**server.connect_kwargs(), **options)
    try:
        yield pool
    finally:
        pool.terminate()


def tagged() -> dict[str, Any]:
    """``server_settings`` that let pg_stat_activity tell this test's connections apart."""
    return {"server_settings": {"application_name": f"facade-{uuid.uuid4().hex[:12]}"}}


async def backends(admin: asyncpg.Connection, options: dict[str, Any]) -> int:
    name = options["server_settings"]["application_name"]
    count = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
    )
    return int(count)


# --------------------------------------------------------------------------------------------
# API surface
# --------------------------------------------------------------------------------------------


@run_async
async def test_create_pool_awaited_or_entered_serves_asyncpg_connections_and_closes(
    pg: Any,
) -> None:
    pool = await create_pool(**pg.connect_kwargs(), min_size=1, max_size=2)
    try:
        assert isinstance(pool, Pool) and not pool.is_closing()
        async with pool.acquire() as conn:
            assert isinstance(conn, asyncpg.Connection)
            assert isinstance(conn, PoolConnectionProxy)
            assert await conn.fetchval("SELECT 40 + 2") == 42
        await pool.close()
        assert pool.is_closing()
        await pool.close()  # a second close is a no-op
    finally:
        pool.terminate()
    async with create_pool(**pg.connect_kwargs(), min_size=0, max_size=1) as entered:
        assert await entered.fetchval("SELECT 1") == 1
    assert entered.is_closing()
    assert entered.get_size() == 0
    async with Pool(dsn=pg.dsn, min_size=1, max_size=1) as direct:  # as asyncpg.Pool(...)
        assert await direct.fetchval("SELECT 2") == 2


@run_async
async def test_acquire_is_awaited_or_entered_and_a_second_release_does_nothing(pg: Any) -> None:
    async with started(pg, min_size=1, max_size=1) as pool:
        conn = await pool.acquire(timeout=5)
        assert pool.get_idle_size() == 0
        await pool.release(conn)
        await pool.release(conn)
        await pool.release(conn, timeout=1)
        ctx = pool.acquire()
        async with ctx as again:
            assert await again.fetchval("SELECT 1") == 1
            with pytest.raises(asyncpg.InterfaceError, match="already acquired"):
                await ctx.__aenter__()
        s = pool.stats()
        assert isinstance(s, PoolStats)
        assert (s.size, s.in_use) == (1, 0)


@run_async
async def test_a_released_connection_raises_asyncpgs_interface_error_on_any_use(pg: Any) -> None:
    async with started(pg, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            raw = conn._con
            assert repr(raw) in repr(conn)
            statement = await conn.prepare("SELECT 1")
        assert "[released]" in repr(conn)
        released = r"cannot call Connection\.execute\(\): connection has been released"
        with pytest.raises(asyncpg.InterfaceError, match=released):
            conn.execute("SELECT 1")
        with pytest.raises(asyncpg.InterfaceError, match="released back to the pool"):
            conn.is_closed()
        with pytest.raises(asyncpg.InterfaceError, match="released back to the pool"):
            conn.some_attribute = 1
        with pytest.raises(asyncpg.InterfaceError, match="released back to the pool"):
            await statement.fetchval()
        with pytest.raises(asyncpg.InterfaceError, match="released back to the pool"):
            await conn.close()


@run_async
async def test_release_refuses_what_is_not_a_member_of_this_pool(pg: Any) -> None:
    async with started(pg) as pool, started(pg) as other:
        conn = await pool.acquire()
        try:
            for stranger in (conn._con, object(), None):
                with pytest.raises(asyncpg.InterfaceError, match="is not a member of this pool"):
                    await pool.release(stranger)
            with pytest.raises(asyncpg.InterfaceError, match="is not a member of this pool"):
                await other.release(conn)
            assert await conn.fetchval("SELECT 1") == 1  # still ours, still usable
        finally:
            await pool.release(conn)


@run_async
async def test_query_and_copy_methods_run_on_a_leased_connection_and_give_it_back(
    pg: Any,
) -> None:
    table = f"facade_{uuid.uuid4().hex[:8]}"
    async with started(pg, min_size=1, max_size=2) as pool:
        await pool.execute(f"CREATE TABLE {table} (x int, y text)")
        try:
            assert await pool.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "one") == (
                "INSERT 0 1"
            )
            await pool.executemany(f"INSERT INTO {table} VALUES ($1, $2)", [(2, "b"), (3, "c")])
            rows = await pool.fetch(f"SELECT x FROM {table} ORDER BY x")
            assert [r["x"] for r in rows] == [1, 2, 3]
            row = await pool.fetchrow(f"SELECT y FROM {table} WHERE x = $1", 2)
            assert row is not None and row["y"] == "b"
            assert await pool.fetchval("SELECT 1, 2", column=1) == 2
            many = await pool.fetchmany("SELECT $1::int * 2", [(1,), (2,)])
            assert [r[0] for r in many] == [2, 4]
            await pool.copy_records_to_table(table, records=[(4, "d")], columns=["x", "y"])
            await pool.copy_to_table(table, source=io.BytesIO(b"5\te\n"), columns=["x", "y"])
            out = io.BytesIO()
            await pool.copy_from_table(table, output=out, columns=["x"], format="csv")
            assert sorted(out.getvalue().split()) == [b"1", b"2", b"3", b"4", b"5"]
            out = io.BytesIO()
            await pool.copy_from_query(f"SELECT y FROM {table} WHERE x > $1", 3, output=out)
            assert sorted(out.getvalue().split()) == [b"d", b"e"]
            with pytest.raises(asyncpg.UndefinedTableError):
                await pool.fetch("SELECT * FROM no_such_table_here")
            assert pool.stats().in_use == 0
        finally:
            await pool.execute(f"DROP TABLE {table}")


@run_async
async def test_a_pool_used_before_it_started_while_it_starts_or_once_closed_says_so(
    pg: Any,
) -> None:
    pool = create_pool(**pg.connect_kwargs(), min_size=1, max_size=1)
    with pytest.raises(asyncpg.InterfaceError, match="pool is not initialized"):
        await pool.acquire()
    with pytest.raises(asyncpg.InterfaceError, match="pool is not initialized"):
        await pool.close()
    starting = asyncio.ensure_future(pool)
    await asyncio.sleep(0)
    with pytest.raises(asyncpg.InterfaceError, match="being initialized, but not yet ready"):
        await pool.fetchval("SELECT 1")
    with pytest.raises(asyncpg.InterfaceError, match="being initialized in another task"):
        await pool
    assert await starting is pool
    assert await pool is pool  # awaiting a started pool again is harmless
    await pool.close()
    with pytest.raises(asyncpg.InterfaceError, match="pool is closed"):
        await pool.acquire()


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"max_size": 0}, ValueError, "max_size is expected to be greater than zero"),
        ({"min_size": -1}, ValueError, "min_size is expected to be greater or equal to zero"),
        ({"min_size": 3, "max_size": 2}, ValueError, "min_size is greater than max_size"),
        ({"init_size": -1, "min_size": 0}, ValueError, "init_size is expected to be greater"),
        ({"init_size": 5, "max_size": 3, "min_size": 1}, ValueError,
         "init_size is greater than max_size"),
        ({"init_size": 1, "min_size": 2}, ValueError, "init_size is smaller than min_size"),
        ({"max_queries": 0}, ValueError, "max_queries is expected to be greater than zero"),
        ({"max_inactive_connection_lifetime": -1}, ValueError,
         "max_inactive_connection_lifetime is expected to be greater or equal to zero"),
        ({"connection_class": int}, TypeError, "connection_class is expected to be a subclass"),
        ({"record_class": dict}, TypeError, "record_class is expected to be a subclass"),
        ({"min_size": "1"}, TypeError, "min_size must be an int"),
        ({"max_inactive_connection_lifetime": "5"}, TypeError,
         "max_inactive_connection_lifetime must be a number"),
        ({"setup": 5}, TypeError, "setup must be callable"),
        ({"statement_cache_sise": 5}, TypeError, "statement_cache_sise"),
        ({"fail_fast_after": -1}, ValueError, "fail_fast_after"),
    ],
)
def test_arguments_are_checked_when_the_pool_is_made(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        create_pool("postgresql://app@127.0.0.1:1/app", **kwargs)


@run_async
async def test_init_runs_once_per_connection_setup_per_acquire_and_reset_per_release(
    pg: Any,
) -> None:
    seen: dict[str, list[Any]] = {"init": [], "setup": [], "reset": []}

    async def init(conn: Any) -> None:
        seen["init"].append(conn)

    async def setup(conn: Any) -> None:
        seen["setup"].append(conn)

    async def reset(conn: Any) -> None:
        seen["reset"].append(conn)

    async with started(pg, min_size=1, max_size=1, init=init, setup=setup, reset=reset) as pool:
        for _ in range(3):
            async with pool.acquire() as conn:
                assert seen["setup"][-1] is conn  # the very proxy acquire returns
        await eventually(lambda: len(seen["reset"]) == 3)
    assert len(seen["init"]) == 1 and type(seen["init"][0]) is asyncpg.Connection
    assert len(seen["setup"]) == 3
    assert all(raw is seen["init"][0] for raw in seen["reset"])  # the driver connection


@run_async
async def test_a_failing_setup_closes_its_connection_and_the_caller_gets_its_error(
    pg: Any,
) -> None:
    calls = 0

    class SetupFailed(Exception):
        pass

    async def setup(conn: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise SetupFailed

    seen: list[Any] = []

    async def setup_seen(conn: Any) -> None:
        seen.append(conn)
        await setup(conn)

    async with started(pg, min_size=1, max_size=1, setup=setup_seen) as pool:
        first = pool.stats().connections_opened
        with pytest.raises(SetupFailed):
            await pool.acquire(timeout=5)
        # As asyncpg's, the proxy setup had stays on its closed connection:
        # is_closed() answers, a query fails as on any closed connection,
        # and a release of it does nothing.
        failed = seen[0]
        assert failed.is_closed()
        with pytest.raises(asyncpg.InterfaceError, match="closed"):
            await failed.fetchval("SELECT 1")
        await pool.release(failed)
        async with pool.acquire(timeout=5) as conn:
            assert await conn.fetchval("SELECT 1") == 1
        s = pool.stats()
        assert s.connections_opened == first + 1  # the one setup failed on was replaced
        assert s.in_use == 0


@run_async
async def test_a_failing_init_fails_the_acquire_it_connected_for_with_its_own_error(
    pg: Any,
) -> None:
    calls = 0
    made: list[Any] = []

    class InitFailed(Exception):
        pass

    async def init(conn: Any) -> None:
        nonlocal calls
        calls += 1
        made.append(conn)
        if calls == 1:
            raise InitFailed("init went wrong")

    async with started(pg, min_size=0, max_size=1, init=init) as pool:
        with pytest.raises(InitFailed, match="init went wrong"):
            await pool.acquire(timeout=5)
        assert made[0].is_closed()
        async with pool.acquire(timeout=5) as conn:  # the next connect runs init again
            assert await conn.fetchval("SELECT 1") == 1
        assert calls == 2 and pool.stats().in_use == 0


@run_async
async def test_the_default_reset_is_asyncpgs_full_session_reset(pg: Any) -> None:
    async with started(pg, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'left_behind'")
            pid = conn.get_server_pid()
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid  # the same session, reset
            assert await conn.fetchval("SHOW application_name") != "left_behind"


class _OwnReset(asyncpg.Connection):  # type: ignore[misc]
    resets = 0

    async def reset(self, *, timeout: float | None = None) -> None:
        type(self).resets += 1
        await super().reset(timeout=timeout)


class _OwnResetQuery(asyncpg.Connection):  # type: ignore[misc]
    def get_reset_query(self) -> str:
        return "RESET application_name"


@run_async
async def test_a_connection_class_s_own_reset_or_reset_query_is_what_release_runs(
    pg: Any,
) -> None:
    async with started(pg, min_size=1, max_size=1, connection_class=_OwnReset) as pool:
        for _ in range(2):
            async with pool.acquire() as conn:
                assert isinstance(conn, _OwnReset)
        await eventually(lambda: _OwnReset.resets == 2)
    async with started(pg, min_size=1, max_size=1, connection_class=_OwnResetQuery) as pool:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'undone'")
            await conn.execute("SET search_path = 'kept'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") != "undone"
            assert await conn.fetchval("SHOW search_path") == "kept"


@run_async
async def test_a_transaction_left_open_is_reported_to_the_loop_and_rolled_back(pg: Any) -> None:
    reported: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, context: reported.append(context["message"])
    )
    async with started(pg, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'undone_by_the_reset'")
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE gone_with_the_rollback (x int)")
        assert any("active transaction" in message for message in reported)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT to_regclass('gone_with_the_rollback')") is None
            # The session reset ran after the rollback, and no transaction is left.
            assert await conn.fetchval("SHOW application_name") != "undone_by_the_reset"
            assert not conn.is_in_transaction()


@run_async
async def test_a_connect_callback_is_used_and_one_returning_no_connection_fails_at_once(
    pg: Any,
) -> None:
    calls: list[dict[str, Any]] = []

    async def connect(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return await asyncpg.connect(*args, **kwargs)

    async with started(pg, min_size=2, max_size=2, connect=connect) as pool:
        assert await pool.fetchval("SELECT 1") == 1
    assert len(calls) == 2
    assert {"loop", "connection_class", "record_class"} <= calls[0].keys()

    async def bad_connect(*args: Any, **kwargs: Any) -> Any:
        return 1

    t0 = time.monotonic()
    with pytest.raises(asyncpg.InterfaceError, match="expected pool connect callback to return"):
        await create_pool(**pg.connect_kwargs(), connect=bad_connect)
    assert time.monotonic() - t0 < 2.0  # not ridden out as an outage


@run_async
async def test_set_connect_args_and_expire_connections_move_the_pool_to_new_arguments(
    pg: Any,
) -> None:
    async with started(pg, min_size=1, max_size=1) as pool:
        conn = await pool.acquire()
        pool.set_connect_args(**pg.connect_kwargs(), server_settings={"application_name": "new"})
        await pool.expire_connections()
        assert conn.get_settings().application_name != "new"  # a lease keeps its connection
        await pool.release(conn)
        async with pool.acquire(timeout=5) as conn:
            assert conn.get_settings().application_name == "new"
        with pytest.raises(TypeError, match="no_such_keyword"):
            pool.set_connect_args(no_such_keyword=1)


@run_async
async def test_pgmarina_settings_pass_through_beside_asyncpgs_connect_keywords(pg: Any) -> None:
    options = tagged()
    async with started(
        pg, min_size=1, max_size=2, name="facade-pool", max_lifetime=600.0, check_window=None,
        command_timeout=30, **options,
    ) as pool:
        assert "'facade-pool'" in repr(pool)
        async with pool.acquire() as conn:
            assert conn._config.command_timeout == 30
        async with admin_of(pg) as admin:
            assert await backends(admin, options) == 1


# --------------------------------------------------------------------------------------------
# Sizing
# --------------------------------------------------------------------------------------------


@run_async
async def test_init_size_opens_at_start_and_idle_ones_above_min_size_close_when_inactive(
    pg: Any,
) -> None:
    async with started(
        pg, init_size=3, min_size=1, max_size=3, max_inactive_connection_lifetime=0.2
    ) as pool:
        assert (pool.get_init_size(), pool.get_min_size(), pool.get_max_size()) == (3, 1, 3)
        assert pool.get_size() == 3 and pool.get_idle_size() == 3
        await eventually(lambda: pool.get_size() == 1, timeout=3)
        await asyncio.sleep(0.5)
        assert pool.get_size() == 1  # the floor stays, idle or not
        assert await pool.fetchval("SELECT 1") == 1


@run_async
async def test_max_size_bounds_the_connections_under_load(pg: Any) -> None:
    options = tagged()
    async with started(pg, min_size=0, max_size=3, **options) as pool, admin_of(pg) as admin:
        most = 0

        async def worker() -> None:
            nonlocal most
            async with pool.acquire() as conn:
                most = max(most, pool.get_size())
                await conn.execute("SELECT pg_sleep(0.01)")

        await asyncio.gather(*(worker() for _ in range(60)))
        assert most <= 3
        assert await backends(admin, options) <= 3
        assert pool.stats().in_use == 0


@run_async
async def test_max_queries_replaces_a_connection_after_that_many_leases(pg: Any) -> None:
    async with started(pg, min_size=1, max_size=1, max_queries=2) as pool:
        pids = [await pool.fetchval("SELECT pg_backend_pid()") for _ in range(4)]
        assert pids[0] == pids[1] != pids[2] == pids[3]


# --------------------------------------------------------------------------------------------
# Timeouts
# --------------------------------------------------------------------------------------------


@run_async
async def test_acquire_timeout_raises_asyncio_timeout_error_when_every_connection_is_out(
    pg: Any,
) -> None:
    async with started(pg, min_size=1, max_size=1) as pool:
        async with pool.acquire():
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await pool.acquire(timeout=0.05)
            assert time.monotonic() - t0 < 1.0
        async with pool.acquire(timeout=1) as conn:  # nothing lost meanwhile
            assert await conn.fetchval("SELECT 1") == 1


@run_async
async def test_a_timeout_that_is_not_a_number_of_seconds_is_refused_at_once(pg: Any) -> None:
    async with started(pg, min_size=1, max_size=1) as pool:
        with pytest.raises(TypeError, match=r"^timeout must be a number"):
            pool.acquire(timeout="5")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^timeout must be >= 0"):
            pool.acquire(timeout=-1)
        conn = await pool.acquire()
        with pytest.raises(ValueError, match=r"^timeout must be a number of seconds, not NaN"):
            await pool.release(conn, timeout=float("nan"))
        await pool.release(conn)


@run_async
async def test_release_timeout_bounds_a_reset_the_caller_waits_for_and_raises(pg: Any) -> None:
    slow = True

    async def reset(conn: Any) -> None:
        if slow:
            await asyncio.sleep(2)

    async with started(pg, min_size=1, max_size=1, reset=reset) as pool:
        conn = await pool.acquire()
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await pool.release(conn, timeout=0.05)
        assert time.monotonic() - t0 < 1.0
        slow = False
        async with pool.acquire(timeout=5) as again:  # replaced, not lost
            assert await again.fetchval("SELECT 1") == 1
        assert pool.stats().connections_closed == 1


@run_async
async def test_setup_counts_against_the_acquire_timeout(pg: Any) -> None:
    async def setup(conn: Any) -> None:
        await asyncio.sleep(2)

    async with started(pg, min_size=1, max_size=1, setup=setup) as pool:
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await pool.acquire(timeout=0.1)
        assert time.monotonic() - t0 < 1.0
        await eventually(lambda: pool.stats().in_use == 0)


# --------------------------------------------------------------------------------------------
# Broken connections
# --------------------------------------------------------------------------------------------


@run_async
async def test_an_idle_connection_the_server_killed_is_never_handed_out(pg: Any) -> None:
    async with started(pg, min_size=1, max_size=1) as pool, admin_of(pg) as admin:
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)
        async with pool.acquire(timeout=5) as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid


@run_async
async def test_closing_or_terminating_a_leased_connection_gives_it_back_at_once(
    pg: Any,
) -> None:
    async with started(pg, min_size=1, max_size=1) as pool:
        conn = await pool.acquire()
        await conn.close()
        assert pool.stats().in_use == 0
        conn = await pool.acquire(timeout=5)  # no release() was needed
        conn.terminate()
        await pool.release(conn)  # harmless, as after any release
        async with pool.acquire(timeout=5) as conn:
            await conn.close()  # inside a block, the block's release does nothing more
        assert await pool.fetchval("SELECT 1") == 1
        assert pool.stats().connections_opened == 4


@run_async
async def test_a_connection_broken_mid_query_fails_that_query_and_is_replaced(
    pg: Any, fault_proxy: Callable[[str, int], FaultProxy]
) -> None:
    proxy = fault_proxy(pg.host, pg.port)
    connect = {**pg.connect_kwargs(), "host": proxy.host, "port": proxy.port}
    pool = await create_pool(**connect, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            query = asyncio.ensure_future(conn.execute("SELECT pg_sleep(5)"))
            await asyncio.sleep(0.2)
            proxy.reset_all()
            with pytest.raises((asyncpg.PostgresConnectionError, OSError)):
                await query
        async with pool.acquire(timeout=5) as conn:
            assert await conn.fetchval("SELECT 1") == 1
        assert pool.stats().connections_lost >= 1
    finally:
        pool.terminate()


# --------------------------------------------------------------------------------------------
# Restarts and outages
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.private_cluster
@run_async
async def test_the_pool_serves_again_after_a_server_restart(private_pg: Any) -> None:
    async with started(private_pg, min_size=2, max_size=2, check_window=0) as pool:
        before = await pool.fetchval("SELECT pg_backend_pid()")
        await asyncio.to_thread(private_pg.restart)
        pids = {await pool.fetchval("SELECT pg_backend_pid()", timeout=5) for _ in range(3)}
        assert before not in pids
        await eventually(lambda: pool.get_size() == 2)


@pytest.mark.slow
@pytest.mark.private_cluster
@run_async
async def test_an_outage_fails_waiting_acquires_with_the_drivers_error_instead_of_hanging(
    private_pg: Any,
) -> None:
    # The defect: with asyncpg's acquire timeout of None, a caller that queued
    # during an outage waited until the server came back, however long.
    async with started(private_pg, min_size=1, max_size=1, fail_fast_after=0.5) as pool:
        await asyncio.to_thread(private_pg.stop)
        t0 = time.monotonic()
        with pytest.raises(ConnectionRefusedError) as info:  # the driver's error, as asyncpg's
            await asyncio.wait_for(pool.fetchval("SELECT 1"), 10)
        assert time.monotonic() - t0 < 5.0
        assert type(info.value.__cause__).__name__ == "PoolConnectError"
        t0 = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            await pool.acquire()  # new callers fail at once
        assert time.monotonic() - t0 < 0.5
        await asyncio.to_thread(private_pg.start)
        await eventually(lambda: pool.get_size() == 1, timeout=10)
        assert await pool.fetchval("SELECT 1", timeout=5) == 1


@run_async
async def test_create_pool_fails_with_the_servers_words_when_it_rejects_the_login(
    pg: Any,
) -> None:
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await create_pool(**{**pg.connect_kwargs(), "database": "no_such_db_here"})


# --------------------------------------------------------------------------------------------
# Cancellation
# --------------------------------------------------------------------------------------------


@run_async
async def test_a_cancelled_acquire_loses_no_connection(pg: Any) -> None:
    async with started(pg, min_size=1, max_size=1) as pool:
        held = await pool.acquire()
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await pool.release(held)
        async with pool.acquire(timeout=2) as conn:
            assert await conn.fetchval("SELECT 1") == 1
        assert pool.stats().waiting == 0


@run_async
async def test_a_release_cancelled_during_its_reset_finishes_it_and_keeps_the_connection(
    pg: Any,
) -> None:
    resets = 0

    async def reset(conn: Any) -> None:
        nonlocal resets
        await asyncio.sleep(0.2)
        resets += 1

    async with started(pg, min_size=1, max_size=1, reset=reset) as pool:
        conn = await pool.acquire()
        pid = conn.get_server_pid()
        releasing = asyncio.ensure_future(pool.release(conn))
        await asyncio.sleep(0.05)
        releasing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await releasing
        async with pool.acquire(timeout=2) as again:
            assert again.get_server_pid() == pid  # reset, kept, not replaced
        assert resets >= 1
        assert pool.stats().connections_closed == 0


class _SlowResetQuery(asyncpg.Connection):  # type: ignore[misc]
    def get_reset_query(self) -> str:
        return "SELECT pg_sleep(0.3)"


class _FailingResetQuery(asyncpg.Connection):  # type: ignore[misc]
    failures = 1  # how many resets fail, from the first

    def get_reset_query(self) -> str:
        type(self).failures -= 1
        return "SELECT 1/0" if type(self).failures >= 0 else "RESET ALL"


@run_async
async def test_a_block_cancelled_in_its_default_reset_keeps_the_connection(pg: Any) -> None:
    """Under contention the block's end runs the default (full) reset itself; cancelled
    there, it leaves the connection to a reset that starts afresh, and it is kept."""
    async with started(pg, min_size=1, max_size=1, connection_class=_SlowResetQuery) as pool:
        entered = asyncio.Event()
        pid = 0

        async def borrower() -> None:
            nonlocal pid
            async with pool.acquire() as conn:
                pid = conn.get_server_pid()
                entered.set()

        task = asyncio.ensure_future(borrower())
        await entered.wait()
        await asyncio.sleep(0.1)  # in the reset
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.acquire(timeout=5) as again:
            assert again.get_server_pid() == pid  # reset afresh, kept
        assert pool.stats().connections_closed == 0


@run_async
async def test_a_default_reset_that_fails_at_the_block_end_raises_and_replaces(pg: Any) -> None:
    async with started(pg, min_size=1, max_size=1, connection_class=_FailingResetQuery) as pool:
        with pytest.raises(asyncpg.DataError, match="division by zero"):
            async with pool.acquire() as conn:
                pid = conn.get_server_pid()
        async with pool.acquire(timeout=5) as conn:
            assert conn.get_server_pid() != pid
            assert await conn.fetchval("SELECT 1") == 1
        s = pool.stats()
        assert (s.connections_opened, s.connections_lost, s.resets) == (2, 0, 2)


@run_async
async def test_cancelling_a_task_inside_async_with_acquire_releases_its_connection(
    pg: Any,
) -> None:
    async with started(pg, min_size=1, max_size=1) as pool:
        inside = asyncio.Event()

        async def borrower() -> None:
            async with pool.acquire() as conn:
                inside.set()
                await conn.execute("SELECT pg_sleep(5)")

        task = asyncio.ensure_future(borrower())
        await inside.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.acquire(timeout=5) as conn:
            assert await conn.fetchval("SELECT 1") == 1


# --------------------------------------------------------------------------------------------
# Close
# --------------------------------------------------------------------------------------------


@run_async
async def test_close_waits_for_leases_and_a_close_given_up_on_terminates_them(pg: Any) -> None:
    async with started(pg, min_size=1, max_size=1) as pool:
        released = False

        async def borrower(hold: float) -> None:
            nonlocal released
            async with pool.acquire() as conn:
                await asyncio.sleep(hold)
                assert await conn.fetchval("SELECT 1") == 1
            released = True

        task = asyncio.ensure_future(borrower(0.2))
        await asyncio.sleep(0.05)
        await pool.close()
        assert released and task.done()

    async with started(pg, min_size=1, max_size=1) as pool:
        held = await pool.acquire()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pool.close(), 0.1)
        assert pool.is_closing()
        assert held._con.is_closed()  # terminated under its borrower
        await pool.release(held)  # quietly


@run_async
async def test_close_logs_a_warning_when_a_lease_keeps_it_waiting(
    pg: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(facade, "_CLOSE_WARN_AFTER", 0.05)
    async with started(pg, min_size=1, max_size=1) as pool:
        held = await pool.acquire()
        with caplog.at_level(logging.WARNING, logger="pgmarina.compat.asyncpg"):
            closing = asyncio.ensure_future(pool.close())
            await asyncio.sleep(0.2)
            await pool.release(held)
            await closing
        assert any("close() has waited" in r.getMessage() for r in caplog.records)


@run_async
async def test_terminate_closes_leased_connections_and_later_calls_do_nothing(pg: Any) -> None:
    options = tagged()
    async with started(pg, min_size=2, max_size=2, **options) as pool, admin_of(pg) as admin:
        held = await pool.acquire()
        pool.terminate()
        assert pool.is_closing() and held._con.is_closed()
        pool.terminate()
        await pool.close()
        await pool.release(held)
        await eventually(lambda: _no_backends(admin, options))


async def _no_backends(admin: asyncpg.Connection, options: dict[str, Any]) -> bool:
    return await backends(admin, options) == 0


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_the_pool_serves_the_loop_that_made_it_and_refuses_another_one(pg: Any, kind: str) -> None:
    """The façade's own fast path (an idle connection at hand) and its queue
    check the caller's loop as the shell's do: asyncio's loops by their
    thread, other kinds by asking asyncio."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
    new_loop = asyncio.new_event_loop if kind == "asyncio" else uvloop.new_event_loop
    home = new_loop()
    thread = threading.Thread(target=home.run_forever, daemon=True)
    thread.start()

    def on_home(coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, home).result(30)

    async def started_at_home() -> Pool:
        return await create_pool(**pg.connect_kwargs(), min_size=1, max_size=1)

    pool = on_home(started_at_home())
    try:
        assert (pool._pool._asyncio_loop is not None) == (kind == "asyncio")

        async def use(tasks: int) -> list[int]:
            async def one() -> int:
                async with pool.acquire() as conn:
                    return await conn.fetchval("SELECT 1")  # type: ignore[no-any-return]

            return await asyncio.gather(*(one() for _ in range(tasks)))

        assert on_home(use(1)) == [1]  # an idle connection: the fast path
        assert on_home(use(5)) == [1] * 5  # four of them queue behind the first

        refused_elsewhere(pool, pool.acquire, new_loop)
        assert pool.get_idle_size() == 1
        assert on_home(use(1)) == [1]
    finally:
        on_home(pool.close())
        home.call_soon_threadsafe(home.stop)
        thread.join(5)
        home.close()
