"""``pgbouncer=True`` (Scale-out issue): what it refuses, and what it keeps from reaching the
server through a real PgBouncer in transaction pooling mode.

The load test (``test_pgbouncer_load.py``) shows that no named prepared statement is left
behind; these tests show the rest of the mode: no session reset and no session-level setting
sent by the pool or the driver (read from the server's statement log), a transaction left
open still rolled back on release, and the arguments it refuses.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from bouncerbed import Bouncer
from pgmarina import AsyncPool, Pool, reset_on_release

DSN = "postgresql://u@127.0.0.1:1/db"  # never connected to: the pools are not opened

#: Session resets the drivers send for a full reset: psycopg's and psycopg2's, asyncpg's.
SESSION_RESET = re.compile(r"DISCARD ALL|RESET ALL|UNLISTEN \*|pg_advisory_unlock_all")

COMBOS = [
    pytest.param(AsyncPool, "asyncpg", id="asyncpg-AsyncPool"),
    pytest.param(AsyncPool, "psycopg", id="psycopg-AsyncPool"),
    pytest.param(Pool, "psycopg", id="psycopg-Pool"),
    pytest.param(Pool, "psycopg2", id="psycopg2-Pool"),
]


# ------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize("shell", [AsyncPool, Pool])
@pytest.mark.parametrize("value", ["auto", 1, None])
def test_pgbouncer_takes_only_true_or_false(shell: type, value: Any) -> None:
    with pytest.raises(TypeError, match=r"^pgbouncer must be True or False.*no automatic"):
        shell(DSN, pgbouncer=value)


@pytest.mark.parametrize("how", ["keyword", "connect_kwargs"])
def test_an_asyncpg_statement_cache_conflicts_with_pgbouncer(how: str) -> None:
    kwargs: dict[str, Any] = {"statement_cache_size": 100}
    if how == "connect_kwargs":
        kwargs = {"connect_kwargs": kwargs}
    with pytest.raises(ValueError, match=r"^statement_cache_size=100 conflicts with pgbouncer"):
        AsyncPool(DSN, driver="asyncpg", pgbouncer=True, **kwargs)


@pytest.mark.parametrize("shell", [AsyncPool, Pool])
def test_psycopg_automatic_preparation_conflicts_with_pgbouncer(shell: type) -> None:
    with pytest.raises(ValueError, match=r"^prepare_threshold=5 conflicts with pgbouncer"):
        shell(DSN, driver="psycopg", pgbouncer=True, prepare_threshold=5)


@pytest.mark.parametrize(
    ("shell", "driver", "kwargs"),
    [
        (AsyncPool, "asyncpg", {"statement_cache_size": 0}),
        (AsyncPool, "psycopg", {"prepare_threshold": None}),
        (Pool, "psycopg", {"prepare_threshold": None}),
        (Pool, "psycopg2", {}),
    ],
)
def test_the_settings_pgbouncer_makes_may_also_be_given(
    shell: type, driver: str, kwargs: dict[str, Any]
) -> None:
    pool = shell(DSN, driver=driver, pgbouncer=True, **kwargs)
    assert not pool.closed


# ------------------------------------------------------------------------------------------
# Through a real PgBouncer


def _traced_server(make_private_pg: Callable[..., Any]) -> Any:
    # JIT on, as on many servers, so that asyncpg's introspection would switch it off.
    return make_private_pg({"log_statement": "all", "jit": True})


def _statements(server: Any) -> list[str]:
    """The statements in the server's log, each whole (a query's lines go on unprefixed)."""
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d )", server.read_log())
    return [r for r in records if re.search(r"LOG:  (statement|execute [^:]*):", r)]


def _use(shell: type, driver: str, dsn: str, body: Callable[[Any], Any], **settings: Any) -> None:
    """Open a pool, run ``body(conn)`` on three leases one after another, close it."""
    if shell is AsyncPool:

        async def run() -> None:
            async with AsyncPool(dsn, driver=driver, min_size=1, max_size=1, **settings) as pool:
                for _ in range(3):
                    async with pool.connection() as conn:
                        await body(conn)

        asyncio.run(run())
        return
    with Pool(dsn, driver=driver, min_size=1, max_size=1, **settings) as pool:
        for _ in range(3):
            with pool.connection() as conn:
                body(conn)


def _select_one(shell: type, driver: str) -> Callable[[Any], Any]:
    if driver == "asyncpg":
        return lambda conn: conn.fetchval("SELECT 1")
    if shell is AsyncPool:
        return lambda conn: conn.execute("SELECT 1")
    return lambda conn: conn.cursor().execute("SELECT 1")


@pytest.mark.private_cluster
@pytest.mark.parametrize(("shell", "driver"), COMBOS)
def test_reset_full_sends_no_session_reset_through_pgbouncer(
    make_private_pg: Callable[..., Any], make_pgbouncer: Callable[..., Bouncer],
    shell: type, driver: str,
) -> None:
    """Behind a transaction-mode bouncer a session reset (DISCARD ALL, RESET ALL...) would
    reset whichever server session the bouncer picked, another client's included:
    ``reset="full"`` must not send one."""
    server = _traced_server(make_private_pg)
    bouncer = make_pgbouncer(server)
    _use(shell, driver, bouncer.dsn, _select_one(shell, driver), reset="full", pgbouncer=True)
    statements = _statements(server)
    assert sum("SELECT 1" in s for s in statements) >= 3  # the log does show statements
    sent = [s for s in statements if SESSION_RESET.search(s)]
    assert not sent, sent


@pytest.mark.private_cluster
@pytest.mark.parametrize(("shell", "driver"), COMBOS)
def test_reset_on_release_sends_no_session_reset_through_pgbouncer(
    make_private_pg: Callable[..., Any], make_pgbouncer: Callable[..., Bouncer],
    shell: type, driver: str,
) -> None:
    """``reset_on_release(conn, "full")`` behind a transaction-mode bouncer ends the
    transaction, and sends no session reset either."""
    server = _traced_server(make_private_pg)
    bouncer = make_pgbouncer(server)
    select = _select_one(shell, driver)

    if shell is AsyncPool:

        async def body(conn: Any) -> None:
            reset_on_release(conn, "full")
            await select(conn)

    else:

        def body(conn: Any) -> None:  # type: ignore[misc]
            reset_on_release(conn, "full")
            select(conn)

    _use(shell, driver, bouncer.dsn, body, pgbouncer=True)
    statements = _statements(server)
    assert sum("SELECT 1" in s for s in statements) >= 3  # the log does show statements
    sent = [s for s in statements if SESSION_RESET.search(s)]
    assert not sent, sent


@pytest.mark.private_cluster
def test_asyncpg_type_introspection_sets_no_session_setting_through_pgbouncer(
    make_private_pg: Callable[..., Any], make_pgbouncer: Callable[..., Bouncer],
) -> None:
    """asyncpg switches JIT off around its type introspection with session-level
    ``set_config`` calls, which a transaction-mode bouncer may run in other clients' server
    sessions and leave there: behind PgBouncer it sends none, and the type still decodes."""
    server = _traced_server(make_private_pg)
    with psycopg.connect(server.dsn, autocommit=True) as setup:
        setup.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    bouncer = make_pgbouncer(server)
    got: list[Any] = []

    async def body(conn: Any) -> None:
        got.append(await conn.fetchval("SELECT $1::mood", "happy"))
        got.append(await conn.fetchval("SELECT ARRAY['sad', 'happy']::mood[]"))

    _use(AsyncPool, "asyncpg", bouncer.dsn, body, pgbouncer=True)
    assert got == ["happy", ["sad", "happy"]] * 3
    statements = _statements(server)
    assert any("mood" in s for s in statements)  # the log does show statements
    sent = [s for s in statements if "set_config" in s]
    assert not sent, sent


@pytest.mark.parametrize(("shell", "driver"), COMBOS)
def test_a_transaction_left_open_is_rolled_back_on_release_through_pgbouncer(
    pg: Any, pgbouncer: Bouncer, shell: type, driver: str,
) -> None:
    """What a release does behind PgBouncer: end the transaction, nothing more.  A row
    inserted and left uncommitted is gone, and the bouncer's server connection is free."""
    table = f"bouncer_left_open_{driver}_{shell.__name__.lower()}"
    with psycopg.connect(pg.dsn, autocommit=True) as setup:
        setup.execute(f"DROP TABLE IF EXISTS {table}")
        setup.execute(f"CREATE TABLE {table} (x int)")
    insert = f"INSERT INTO {table} VALUES (1)"

    if shell is AsyncPool:

        async def run() -> None:
            async with AsyncPool(
                pgbouncer.dsn, driver=driver, min_size=1, max_size=1, pgbouncer=True
            ) as pool:
                conn = await pool.acquire()
                if driver == "asyncpg":
                    await conn.execute("BEGIN")
                await conn.execute(insert)
                await pool.release(conn)
                async with pool.connection() as again:
                    if driver == "asyncpg":
                        assert await again.fetchval(f"SELECT count(*) FROM {table}") == 0
                    else:
                        cur = await again.execute(f"SELECT count(*) FROM {table}")
                        assert (await cur.fetchone())[0] == 0

        asyncio.run(run())
    else:
        with Pool(
            pgbouncer.dsn, driver=driver, min_size=1, max_size=1, pgbouncer=True
        ) as pool:
            conn = pool.acquire()
            conn.cursor().execute(insert)  # psycopg and psycopg2 begin a transaction
            pool.release(conn)
            with pool.connection() as again:
                cur = again.cursor()
                cur.execute(f"SELECT count(*) FROM {table}")
                assert cur.fetchone()[0] == 0
    with psycopg.connect(pg.dsn, autocommit=True) as check:
        assert check.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        check.execute(f"DROP TABLE {table}")


# ------------------------------------------------------------------------------------------
# asyncpg's façade


def test_the_asyncpg_facade_takes_pgbouncer_and_refuses_a_statement_cache() -> None:
    from pgmarina.compat.asyncpg import create_pool

    with pytest.raises(ValueError, match=r"^statement_cache_size=100 conflicts with pgbouncer"):
        create_pool(DSN, pgbouncer=True, statement_cache_size=100)


@pytest.mark.private_cluster
def test_the_asyncpg_facade_with_pgbouncer_prepares_nothing_by_name_and_sets_nothing(
    make_private_pg: Callable[..., Any], make_pgbouncer: Callable[..., Bouncer],
) -> None:
    """``create_pool(..., pgbouncer=True)``: many callers through a transaction-mode bouncer
    with no error, no named statement, no session reset and no ``set_config``."""
    from pgmarina.compat.asyncpg import create_pool

    server = _traced_server(make_private_pg)
    with psycopg.connect(server.dsn, autocommit=True) as setup:
        setup.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    bouncer = make_pgbouncer(server)

    async def run() -> list[Any]:
        async with create_pool(bouncer.dsn, min_size=2, max_size=5, pgbouncer=True) as pool:

            async def task(i: int) -> Any:
                got = []
                for k in range(20):
                    async with pool.acquire() as conn:
                        got.append(await conn.fetchval("SELECT $1::int + 1", k) == k + 1)
                        got.append(await conn.fetchval("SELECT $1::mood", "sad") == "sad")
                return all(got)

            return await asyncio.gather(*(task(i) for i in range(10)), return_exceptions=True)

    results = asyncio.run(run())
    assert results == [True] * 10
    statements = _statements(server)
    assert any("mood" in s for s in statements)  # the log does show statements
    named = [s for s in statements if re.search(r"execute (?!<unnamed>)", s)]
    assert not named, named[:3]
    sent = [s for s in statements if "set_config" in s or SESSION_RESET.search(s)]
    assert not sent, sent[:3]
