"""``pgmarina.compat.psqlpy``: psqlpy's pool and connection API, against a real server.

Written from psqlpy's documentation (the pool reference, and the docstrings
of its ``Connection``, ``Transaction``, ``Cursor``, ``QueryResult`` and
``Listener``).  Where psqlpy is installed, a few tests run the same code on
psqlpy itself and compare.

No pytest-asyncio: each test body runs in ``asyncio.run``, one loop per
test, as psqlpy users' per-test loops do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import inspect
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import pgmarina
import pgmarina.compat.psqlpy as facade
from helpers import eventually
from pgmarina.compat.psqlpy import (
    ConnectionPool,
    ConnRecyclingMethod,
    IsolationLevel,
    LoadBalanceHosts,
    QueryResult,
    ReadVariant,
    SingleQueryResult,
    TargetSessionAttrs,
    build_dsn,
    connect,
    connect_pool,
)
from pgmarina.compat.psqlpy import exceptions as exc
from pgmarina.compat.psqlpy.extra_types import JSONB, BigInt, Text
from pgmarina.compat.psqlpy.row_factories import class_row, tuple_row


def run_async(fn: Callable[..., Awaitable[Any]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def test(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]

    return test


def make_pool(server: Any, **options: Any) -> ConnectionPool:
    options.setdefault("max_db_pool_size", 2)
    return ConnectionPool(dsn=server.dsn, **options)


async def backends(server: Any, application_name: str) -> int:
    admin = await asyncpg.connect(server.dsn)
    try:
        return int(await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            application_name,
        ))
    finally:
        await admin.close()


async def until(get: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 5.0) -> None:
    """Poll ``get()`` (sync or async) until ``ok(value)``."""

    async def check() -> bool:
        value = get()
        if inspect.isawaitable(value):
            value = await value
        return ok(value)

    await eventually(check, timeout=timeout)


def tag() -> str:
    return f"psqlpy-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------
# the pool: the reference's examples and rules


@run_async
async def test_pool_from_separate_parameters_runs_queries(pg: Any) -> None:
    """The reference's first example: username, password, host, port, db_name."""
    pool = ConnectionPool(
        username=pg.user, password=pg.password, host=pg.host, port=pg.port,
        db_name=pg.dbname, max_db_pool_size=10,
    )
    with pool:
        result = await pool.execute("SELECT $1::int + 1 AS n", [41])
        assert result.result() == [{"n": 42}]


@run_async
async def test_dsn_overrides_the_separate_parts(pg: Any) -> None:
    """With a dsn, username/host/port/db_name are ignored (they would not connect)."""
    with ConnectionPool(
        dsn=pg.dsn, username="nobody", host="192.0.2.1", port=1, db_name="nowhere",
        hosts=["192.0.2.2"], ports=[2], max_db_pool_size=2,
        load_balance_hosts=LoadBalanceHosts.Random,  # one host: nothing to balance
    ) as pool:
        assert await (await pool.connection()).fetch_val("SELECT current_user") == pg.user


@run_async
async def test_pool_is_lazy_with_a_minimum_size_of_zero(pg: Any) -> None:
    name = tag()
    with make_pool(pg, application_name=name, max_db_pool_size=3) as pool:
        status = pool.status()
        assert (status.max_size, status.size, status.available, status.waiting) == (3, 0, 0, 0)
        await asyncio.sleep(0.05)
        assert await backends(pg, name) == 0, "a lazy pool connects on first use only"
        conn = await pool.connection()
        assert (pool.status().size, pool.status().available) == (1, 0)
        conn.close()
        assert (pool.status().size, pool.status().available) == (1, 1)
        assert "max_size: 3" in str(pool.status())


def test_a_pool_built_at_import_time_serves_one_event_loop_after_another(pg: Any) -> None:
    """psqlpy users build the pool once and run it from per-test loops: when the
    loop changes, the old loop's connections are dropped (their backends end,
    no socket is left open) and the pool starts fresh instead of failing."""
    name = tag()
    pool = make_pool(pg, application_name=name)

    async def use(n: int) -> None:
        conn = await pool.connection()
        assert await conn.fetch_val("SELECT $1::int", [n]) == n
        forgotten = await pool.connection()  # still leased when the loop ends
        assert await forgotten.fetch_val("SELECT 1") == 1
        conn.close()

    for n in range(3):
        asyncio.run(use(n))
        gc.collect()  # an unclosed socket would warn here (warnings are errors)
    # Two connections per run, but only the last loop's are still open.
    assert asyncio.run(backends(pg, name)) <= 2

    kept: list[Any] = []

    async def keep() -> None:
        kept.append(await pool.connection())

    asyncio.run(keep())

    async def last() -> None:
        # A connection kept from the old loop is gone; giving it back is harmless.
        with pytest.raises(exc.Error):
            await kept[0].fetch_val("SELECT 1")
        kept.pop().close()
        await until(lambda: backends(pg, name), lambda n: n <= 2)
        assert (await pool.execute("SELECT 7 AS x")).result() == [{"x": 7}]
        assert await backends(pg, name) == 1  # the previous loops' are gone
        pool.close()

    asyncio.run(last())
    gc.collect()


@run_async
async def test_connect_and_connect_pool_build_the_same_pool(pg: Any) -> None:
    for factory in (connect, connect_pool):
        with factory(dsn=pg.dsn, max_db_pool_size=4) as pool:
            assert isinstance(pool, ConnectionPool)
            assert pool.status().max_size == 4
            assert await (await pool.connection()).fetch_val("SELECT 5") == 5


@run_async
async def test_awaiting_connect_gives_a_lone_connection_as_psqlpy_0_13_does(pg: Any) -> None:
    name = tag()
    conn = await connect(dsn=pg.dsn, application_name=name)
    assert await conn.fetch_val("SELECT 8") == 8
    assert await backends(pg, name) == 1
    conn.close()
    await until(lambda: backends(pg, name), lambda n: n == 0)


@run_async
async def test_the_builder_sets_the_same_parameters(pg: Any) -> None:
    name = tag()
    builder = (
        facade.ConnectionPoolBuilder().max_pool_size(3).user(pg.user).dbname(pg.dbname)
        .host(pg.host).port(pg.port).application_name(name)
        .conn_recycling_method(ConnRecyclingMethod.Verified)
    )
    if pg.password is not None:
        builder.password(pg.password)
    with builder.build() as pool:
        assert pool.status().max_size == 3
        assert await (await pool.connection()).fetch_val("SHOW application_name") == name


@run_async
async def test_pool_level_execute_and_fetch_use_a_connection_and_give_it_back(pg: Any) -> None:
    with make_pool(pg) as pool:
        assert (await pool.execute("SELECT 1 AS a")).result() == [{"a": 1}]
        assert (await pool.fetch("SELECT $1::text AS b", ["x"])).result() == [{"b": "x"}]
        assert pool.status().available == pool.status().size == 1
        with pytest.raises(exc.ConnectionExecuteError):
            await pool.execute("SELEC 1")
        assert pool.status().available == 1


@run_async
async def test_acquire_is_an_async_context_that_gives_the_connection_back(pg: Any) -> None:
    with make_pool(pg) as pool:
        async with pool.acquire() as conn:
            assert await conn.fetch_val("SELECT 3") == 3
            assert pool.status().available == 0
        assert pool.status().available == 1
        with pytest.raises(exc.ConnectionClosedError):
            await conn.execute("SELECT 1")


@run_async
async def test_status_counts_waiting_callers_and_resize_makes_room(pg: Any) -> None:
    with make_pool(pg, max_db_pool_size=1) as pool:
        held = await pool.connection()
        waiter = asyncio.ensure_future(pool.connection())
        await until(lambda: pool.status(), lambda s: s.waiting == 1)
        pool.resize(2)
        assert pool.status().max_size == 2
        second = await asyncio.wait_for(waiter, 10)
        assert pool.status().size == 2
        second.close()
        held.close()
        pool.resize(1)
        await until(lambda: pool.status(), lambda s: s.size == 1)


@run_async
async def test_cancelled_acquires_and_queries_never_lose_a_connection(pg: Any) -> None:
    with make_pool(pg, max_db_pool_size=2) as pool:

        async def worker(i: int) -> None:
            if i % 3 == 0:
                async with pool.acquire() as conn:
                    await conn.execute("SELECT pg_sleep(0.05)")
            elif i % 3 == 1:
                conn = await pool.connection()
                try:
                    await conn.fetch_val("SELECT pg_sleep(0.05)")
                finally:
                    conn.close()
            else:
                await pool.execute("SELECT pg_sleep(0.05)")

        tasks = [asyncio.ensure_future(worker(i)) for i in range(30)]
        await asyncio.sleep(0.12)
        for task in tasks[::2]:  # some in a query, most still queued
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await until(pool.status, lambda s: s.available == s.size and s.waiting == 0)
        assert pool.status().size <= 2
        assert [(await pool.execute("SELECT 1 AS x")).result() for _ in range(3)] == [
            [{"x": 1}]
        ] * 3


@run_async
async def test_close_refuses_new_connections_and_drops_idle_ones(pg: Any) -> None:
    name = tag()
    pool = make_pool(pg, application_name=name)
    with pool:
        leased = await pool.connection()
        (await pool.connection()).close()
    with pytest.raises(exc.ConnectionPoolExecuteError) as caught:
        await pool.connection()
    assert isinstance(caught.value, exc.BaseConnectionPoolError)
    # The leased one works until it is given back, then it is closed too.
    assert await leased.fetch_val("SELECT 1") == 1
    leased.close()
    await until(lambda: backends(pg, name), lambda n: n == 0)


@run_async
async def test_a_pool_that_cannot_connect_raises_psqlpys_pool_error(pg: Any) -> None:
    """The server refuses the database: psqlpy's pool error at once, pgmarina's as cause."""
    with ConnectionPool(
        username=pg.user, password=pg.password, host=pg.host, port=pg.port,
        db_name="no_such_database_here",
    ) as pool:
        with pytest.raises(exc.BaseConnectionPoolError) as caught:
            await asyncio.wait_for(pool.connection(), 20)
        assert isinstance(caught.value.__cause__, pgmarina.PoolConnectError)
        assert "no_such_database_here" in str(caught.value)


@run_async
async def test_application_name_and_options_reach_the_server(pg: Any) -> None:
    name = tag()
    with make_pool(pg, application_name=name, options="-c search_path=pg_catalog") as pool:
        conn = await pool.connection()
        assert await conn.fetch_val("SHOW application_name") == name
        assert await conn.fetch_val("SHOW search_path") == "pg_catalog"
        conn.close()


@run_async
async def test_keepalive_and_tcp_user_timeout_are_set_on_the_socket(pg: Any) -> None:
    with make_pool(
        pg, keepalives=True, keepalives_idle_sec=31, keepalives_interval_sec=7,
        keepalives_retries=4, tcp_user_timeout_sec=9, tcp_user_timeout_nanosec=500_000_000,
    ) as pool:
        async with pool.acquire() as conn:
            sock = conn.driver_connection._transport.get_extra_info("socket")
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                pytest.skip("the test server is on a Unix socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            tcp = socket.IPPROTO_TCP
            assert sock.getsockopt(tcp, socket.TCP_KEEPIDLE) == 31
            assert sock.getsockopt(tcp, socket.TCP_KEEPINTVL) == 7
            assert sock.getsockopt(tcp, socket.TCP_KEEPCNT) == 4
            assert sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT) == 9500


@run_async
async def test_clean_recycling_resets_session_state_and_fast_keeps_it(pg: Any) -> None:
    """ConnRecyclingMethod.Clean is pgmarina's full reset; Fast leaves session settings."""
    cases = ((ConnRecyclingMethod.Clean, "0"), (ConnRecyclingMethod.Fast, "1234ms"))
    for method, expected in cases:
        with make_pool(pg, max_db_pool_size=1, conn_recycling_method=method) as pool:
            conn = await pool.connection()
            await conn.execute("SET statement_timeout = 1234")
            conn.close()
            again = await pool.connection()
            assert await again.fetch_val("SHOW statement_timeout") == expected, method
            again.close()


@run_async
async def test_verified_recycling_replaces_a_connection_that_died_while_idle(pg: Any) -> None:
    with make_pool(pg, max_db_pool_size=1,
                   conn_recycling_method=ConnRecyclingMethod.Verified) as pool:
        conn = await pool.connection()
        pid = await conn.fetch_val("SELECT pg_backend_pid()")
        conn.close()
        admin = await asyncpg.connect(pg.dsn)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)
        conn = await pool.connection()
        assert await conn.fetch_val("SELECT pg_backend_pid()") != pid
        conn.close()


def test_wrong_parameters_raise_errors_naming_them() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"max_db_pool_size": 0}, "max_db_pool_size"),
        ({"hosts": ["a", "b", "c"], "ports": [1, 2]}, "ports"),
        ({"connect_timeout_nanosec": 5}, "connect_timeout_nanosec"),
        ({"conn_recycling_method": "Sometimes"}, "conn_recycling_method"),
        ({"target_session_attrs": "primary-ish"}, "target_session_attrs"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name) as caught:
            ConnectionPool(**kwargs)
        assert isinstance(caught.value, exc.ConnectionPoolConfigurationError)
    with pytest.raises(TypeError, match="hosts"):
        ConnectionPool(hosts="db1,db2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_db_pool_size"):
        ConnectionPool(max_db_pool_size="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="new_max_size"):
        ConnectionPool().resize(0)


def test_repr_has_sizes_and_no_password() -> None:
    pool = ConnectionPool(username="u", password="s3cret", host="localhost", max_db_pool_size=3)
    text = repr(pool)
    assert "max_size=3" in text and "s3cret" not in text


# ---------------------------------------------------------------------------
# multi-host parameters


def test_multi_host_parameters_become_a_libpq_style_dsn() -> None:
    assert build_dsn(
        username="u", password="p@ss", hosts=["h1", "h2"], ports=[5432, 5433], db_name="db",
        target_session_attrs=TargetSessionAttrs.ReadWrite,
        load_balance_hosts=LoadBalanceHosts.Random,
    ) == (
        "postgresql://u:p%40ss@h1:5432,h2:5433/db"
        "?target_session_attrs=read-write&load_balance_hosts=random"
    )
    # One port serves every host; Any and Disable are the defaults, left out.
    assert build_dsn(
        hosts=["h1", "h2"], port=6432, target_session_attrs=TargetSessionAttrs.Any,
        load_balance_hosts=LoadBalanceHosts.Disable,
    ) == "postgresql://h1:6432,h2:6432"
    assert build_dsn(host="/run/postgresql", port=5432, db_name="db") == (
        "postgresql:///db?host=%2Frun%2Fpostgresql&port=5432"
    )
    assert build_dsn(host="::1", port=5432) == "postgresql://[::1]:5432"
    # Balancing one host means nothing: left out, so asyncpg alone can connect.
    assert build_dsn(host="h", load_balance_hosts=LoadBalanceHosts.Random) == "postgresql://h"


def test_a_dsn_keeps_load_balancing_and_ssl_settings_given_beside_it() -> None:
    pool = ConnectionPool(
        dsn="postgresql://u@h1,h2/db?target_session_attrs=read-write",
        load_balance_hosts=LoadBalanceHosts.Random, ssl_mode=facade.SslMode.Require,
        ca_file="/etc/ca.pem",
    )
    assert pool._dsn == (
        "postgresql://u@h1,h2/db?target_session_attrs=read-write"
        "&load_balance_hosts=random&sslmode=require&sslrootcert=%2Fetc%2Fca.pem"
    )


def test_psqlpys_own_enum_members_are_accepted() -> None:
    psqlpy = pytest.importorskip("psqlpy")
    assert build_dsn(
        hosts=["h", "i"], target_session_attrs=psqlpy.TargetSessionAttrs.ReadOnly,
        load_balance_hosts=psqlpy.LoadBalanceHosts.Random,
    ) == "postgresql://h,i?target_session_attrs=read-only&load_balance_hosts=random"
    ConnectionPool(conn_recycling_method=psqlpy.ConnRecyclingMethod.Clean)


@run_async
async def test_hosts_and_ports_try_each_host_in_turn(pg: Any) -> None:
    """A host that refuses is skipped for the next one (asyncpg's multi-host connect)."""
    dead = await _free_port()
    with ConnectionPool(
        username=pg.user, password=pg.password, db_name=pg.dbname,
        hosts=["127.0.0.1", pg.host], ports=[dead, pg.port],
        target_session_attrs=TargetSessionAttrs.ReadWrite, max_db_pool_size=1,
    ) as pool:
        conn = await pool.connection()
        assert conn.ports == [pg.port]
        assert await conn.fetch_val("SELECT NOT pg_is_in_recovery()") is True
        conn.close()


async def _free_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port


# ---------------------------------------------------------------------------
# the connection's methods and results


@dataclasses.dataclass
class Item:
    id: int
    name: str


async def items_table(conn: Any) -> None:
    await conn.execute("CREATE TEMP TABLE items (id int PRIMARY KEY, name text)")
    await conn.execute_many("INSERT INTO items VALUES ($1, $2)", [[1, "a"], [2, "b"], [3, "c"]])


@run_async
async def test_connection_query_methods_follow_psqlpys_documentation(pg: Any) -> None:
    with make_pool(pg) as pool:
        conn = await pool.connection()
        await items_table(conn)
        assert await conn.execute_batch(
            "INSERT INTO items VALUES (4, 'd'); INSERT INTO items VALUES (5, 'e')"
        ) is None
        result = await conn.execute("SELECT * FROM items WHERE id <= $1 ORDER BY id", [2])
        assert isinstance(result, QueryResult)
        assert result.result() == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
        assert result.result(as_tuple=True) == [(1, "a"), (2, "b")]
        assert (await conn.fetch("SELECT count(*) AS n FROM items")).result() == [{"n": 5}]
        row = await conn.fetch_row("SELECT * FROM items WHERE id = $1", [3])
        assert isinstance(row, SingleQueryResult)
        assert row.result() == {"id": 3, "name": "c"}
        assert row.result(as_tuple=True) == (3, "c")
        assert row.as_class(Item) == Item(3, "c")
        assert await conn.fetch_val("SELECT name FROM items WHERE id = $1", [5]) == "e"
        for method in (conn.fetch_row, conn.fetch_val):
            with pytest.raises(exc.ConnectionExecuteError, match="unexpected number of rows"):
                await method("SELECT * FROM items")
            with pytest.raises(exc.ConnectionExecuteError, match="unexpected number of rows"):
                await method("SELECT * FROM items WHERE false")
        assert conn.in_transaction() is False
        conn.close()


@run_async
async def test_results_convert_through_as_class_row_factory_and_custom_decoders(pg: Any) -> None:
    with make_pool(pg) as pool:
        async with pool.acquire() as conn:
            await items_table(conn)
            result = await conn.execute("SELECT id, name FROM items ORDER BY id")
            assert result.as_class(Item) == [Item(1, "a"), Item(2, "b"), Item(3, "c")]
            assert result.row_factory(class_row(Item))[0] == Item(1, "a")
            assert result.row_factory(tuple_row)[1] == (("id", 2), ("name", "b"))
            assert result.row_factory(lambda row: row["name"].upper()) == ["A", "B", "C"]
            decoded = result.result(custom_decoders={"name": lambda raw: raw.decode() * 2})
            assert decoded[2] == {"id": 3, "name": "cc"}


@run_async
async def test_named_parameters_and_extra_type_wrappers(pg: Any) -> None:
    with make_pool(pg) as pool:
        async with pool.acquire() as conn:
            row = await conn.fetch_row(
                "SELECT $(a)p::int + $(b)p::int AS s, $(a)p::int AS a", {"a": 2, "b": 3}
            )
            assert row.result() == {"s": 5, "a": 2}
            assert await conn.fetch_val(
                "SELECT $1::bigint + 1", [BigInt(2**40)]
            ) == 2**40 + 1
            assert await conn.fetch_val("SELECT $1::text", [Text("t")]) == "t"
            with pytest.raises(exc.PyToRustValueMappingError, match="missing"):
                await conn.execute("SELECT $(missing)p::int", {"other": 1})


@run_async
async def test_json_jsonb_and_uuid_convert_as_psqlpy_converts_them(pg: Any) -> None:
    with make_pool(pg) as pool:
        async with pool.acquire() as conn:
            u = uuid.uuid4()
            row = await conn.fetch_row(
                "SELECT $1::jsonb AS j, $2::json AS js, $3::uuid AS u, $4::uuid AS u2",
                [{"a": [1, 2]}, JSONB([1]).inner_value, u, str(u)],
            )
            assert row.result() == {"j": {"a": [1, 2]}, "js": [1], "u": str(u), "u2": str(u)}
            assert await conn.fetch_val("SELECT $1::jsonb", [JSONB({"k": "v"})]) == {"k": "v"}


@run_async
async def test_a_failed_query_raises_psqlpys_error_with_asyncpgs_as_the_cause(pg: Any) -> None:
    with make_pool(pg) as pool:
        conn = await pool.connection()
        with pytest.raises(exc.ConnectionExecuteError) as caught:
            await conn.execute("SELEC 1")
        assert isinstance(caught.value, exc.Error)
        assert isinstance(caught.value.__cause__, asyncpg.PostgresSyntaxError)
        assert caught.value.__cause__.sqlstate == "42601"
        # The connection is still good after an error.
        assert await conn.fetch_val("SELECT 1") == 1
        conn.close()


@run_async
async def test_a_returned_connection_cannot_be_used_and_back_to_pool_is_close(pg: Any) -> None:
    with make_pool(pg) as pool:
        conn = await pool.connection()
        conn.back_to_pool()
        assert conn.is_closed()
        for call in (
            lambda: conn.execute("SELECT 1"), lambda: conn.fetch_val("SELECT 1"),
            lambda: conn.execute_batch("SELECT 1"),
        ):
            with pytest.raises(exc.ConnectionClosedError):
                await call()
        with pytest.raises(exc.ConnectionClosedError):
            conn.transaction()
        with pytest.raises(exc.ConnectionClosedError):
            _ = conn.driver_connection
        conn.close()  # a second close does nothing
        assert pool.status().available == 1


@run_async
async def test_a_connection_dropped_without_close_goes_back_to_the_pool(pg: Any) -> None:
    with make_pool(pg, max_db_pool_size=1) as pool:
        conn = await pool.connection()
        await conn.execute("BEGIN")
        del conn
        gc.collect()
        again = await asyncio.wait_for(pool.connection(), 10)
        assert again.in_transaction() is False  # rolled back on its way back
        again.close()


@run_async
async def test_connection_as_async_context_and_its_driver_connection(pg: Any) -> None:
    with make_pool(pg) as pool:
        async with await pool.connection() as conn:
            driver = conn.driver_connection
            assert isinstance(driver, asyncpg.Connection)
            assert await driver.fetchval("SELECT 9") == 9
            assert conn.conn_dbname == pg.dbname and conn.user == pg.user
        assert pool.status().available == 1


@run_async
async def test_prepared_statements_execute_list_columns_and_open_cursors(pg: Any) -> None:
    with make_pool(pg) as pool:
        conn = await pool.connection()
        query = "SELECT i, i * 2 AS twice FROM generate_series(1, $1) i"
        statement = await conn.prepare(query, [3])
        assert [c.name for c in statement.columns()] == ["i", "twice"]
        assert (await statement.execute()).result(as_tuple=True) == [(1, 2), (2, 4), (3, 6)]
        async with conn.transaction() as tx:
            in_tx = await tx.prepare("SELECT $1::int + 1", [1])
            assert (await in_tx.execute()).result(as_tuple=True) == [(2,)]
        async with statement.cursor() as cursor:
            assert (await cursor.fetchall()).result() == [
                {"i": 1, "twice": 2}, {"i": 2, "twice": 4}, {"i": 3, "twice": 6}
            ]
        with pytest.raises(exc.TransactionClosedError):
            await in_tx.execute()
        conn.close()
        with pytest.raises(exc.ConnectionClosedError):
            await statement.execute()


@run_async
async def test_copy_records_and_binary_copy_into_a_table(pg: Any) -> None:
    with make_pool(pg) as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE c (id int, name text)")
            assert await conn.copy_records_to_table("c", [(1, "x"), (2, "y")]) == 2
            data = await conn.driver_connection.fetchval("SELECT 1")  # warm, no-op
            assert data == 1
            buf = bytearray()

            async def sink(chunk: bytes) -> None:
                buf.extend(chunk)

            await conn.driver_connection.copy_from_table("c", output=sink, format="binary")
            assert await conn.binary_copy_to_table(bytes(buf), "c", columns=["id", "name"]) == 2
            assert await conn.fetch_val("SELECT count(*) FROM c") == 4


# ---------------------------------------------------------------------------
# transactions


@run_async
async def test_transaction_context_commits_or_rolls_back(pg: Any) -> None:
    with make_pool(pg) as pool:
        conn = await pool.connection()
        await items_table(conn)
        async with conn.transaction() as tx:
            await tx.execute("INSERT INTO items VALUES (10, 'j')")
            assert conn.in_transaction()
            assert await tx.fetch_val("SELECT count(*) FROM items") == 4
        assert await conn.fetch_val("SELECT count(*) FROM items") == 4
        with pytest.raises(RuntimeError):
            async with conn.transaction() as tx:
                await tx.execute("INSERT INTO items VALUES (11, 'k')")
                raise RuntimeError("boom")
        assert await conn.fetch_val("SELECT count(*) FROM items") == 4
        with pytest.raises(exc.TransactionClosedError):
            await tx.execute("SELECT 1")
        conn.close()


@run_async
async def test_manual_transaction_with_options_savepoints_and_errors(pg: Any) -> None:
    with make_pool(pg) as pool:
        conn = await pool.connection()
        await items_table(conn)
        tx = conn.transaction(
            isolation_level=IsolationLevel.Serializable, read_variant=ReadVariant.ReadWrite,
            deferrable=False,
        )
        await tx.begin()
        with pytest.raises(exc.TransactionBeginError):
            await tx.begin()
        assert await tx.fetch_val("SHOW transaction_isolation") == "serializable"
        await tx.execute("INSERT INTO items VALUES (20, 't')")
        await tx.create_savepoint("before")
        await tx.execute("INSERT INTO items VALUES (21, 'u')")
        await tx.rollback_savepoint("before")
        await tx.release_savepoint("before")
        results = await tx.pipeline([("SELECT 1 AS one", None), ("SELECT $1::int AS two", [2])])
        assert [r.result() for r in results] == [[{"one": 1}], [{"two": 2}]]
        with pytest.raises(exc.TransactionExecuteError) as caught:
            await tx.execute("SELECT * FROM no_such_table")
        assert isinstance(caught.value.__cause__, asyncpg.UndefinedTableError)
        await tx.rollback()
        with pytest.raises(exc.TransactionClosedError):
            await tx.commit()
        assert await conn.fetch_val("SELECT count(*) FROM items WHERE id >= 20") == 0

        read_only = conn.transaction(read_variant=ReadVariant.ReadOnly)
        async with read_only:
            assert await read_only.fetch_val("SHOW transaction_read_only") == "on"
            with pytest.raises(exc.TransactionExecuteError):
                await read_only.execute("CREATE TEMP TABLE ro (i int)")
        tx = conn.transaction()
        async with tx:
            await tx.execute("INSERT INTO items VALUES (22, 'v')")
        assert await conn.fetch_val("SELECT count(*) FROM items WHERE id >= 20") == 1
        with pytest.raises(ValueError, match="isolation_level"):
            conn.transaction(isolation_level="sometimes")
        conn.close()


# ---------------------------------------------------------------------------
# cursors


@run_async
async def test_cursor_iterates_in_chunks_of_array_size(pg: Any) -> None:
    with make_pool(pg) as pool:
        conn = await pool.connection()
        await conn.execute("CREATE TEMP TABLE n AS SELECT generate_series(1, 7) AS i")
        query = "SELECT i FROM n WHERE i > $1 ORDER BY i"
        async with conn.transaction(), conn.cursor(query, [0], array_size=3) as cursor:
            chunks = [chunk.result(as_tuple=True) async for chunk in cursor]
        assert chunks == [[(1,), (2,), (3,)], [(4,), (5,), (6,)], [(7,)]]
        # psqlpy's older spelling of array_size.
        async with conn.cursor("SELECT i FROM n ORDER BY i", fetch_number=4) as cursor:
            assert len((await cursor.fetchmany()).result()) == 4
        assert conn.in_transaction() is False
        conn.close()


@run_async
async def test_cursor_methods_outside_a_transaction_and_after_close(pg: Any) -> None:
    with make_pool(pg) as pool:
        conn = await pool.connection()
        cursor = conn.cursor("SELECT generate_series(1, 5) AS i")
        with pytest.raises(exc.CursorClosedError):
            await cursor.fetchone()
        await cursor.start()
        with pytest.raises(exc.CursorStartError):
            await cursor.start()
        assert (await cursor.fetchone()).result() == [{"i": 1}]
        assert (await cursor.fetchmany(2)).result() == [{"i": 2}, {"i": 3}]
        assert (await cursor.fetchall()).result() == [{"i": 4}, {"i": 5}]
        assert (await cursor.fetchall()).result() == []
        cursor.close()  # not awaited, as in psqlpy
        assert await conn.fetch_val("SELECT 1") == 1
        assert conn.in_transaction() is False  # the cursor's own transaction ended
        with pytest.raises(exc.CursorClosedError):
            await cursor.fetchone()
        started = conn.cursor()
        first = await started.execute("SELECT generate_series(1, 20) AS i")
        assert len(first.result()) == 10  # the default array_size
        started.close()
        conn.close()  # waits for the cursor's close before going back
        await until(lambda: pool.status(), lambda s: s.available == 1)
        with pytest.raises(exc.CursorStartError):
            async with (await pool.connection()).cursor("SELEC 1"):
                pass


# ---------------------------------------------------------------------------
# the listener


@run_async
async def test_listener_calls_callbacks_with_psqlpys_arguments(pg: Any) -> None:
    with make_pool(pg) as pool:
        got: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

        async def callback(connection: Any, payload: str, channel: str, process_id: int) -> None:
            await got.put((await connection.fetch_val("SELECT 1"), payload, channel, process_id))

        listener = pool.listener()
        await listener.add_callback("psqlpy_a", callback)
        with pytest.raises(exc.ListenerStartError):
            listener.listen()
        await listener.startup()
        listener.listen()
        async with pool.acquire() as sender:
            pid = await sender.fetch_val("SELECT pg_backend_pid()")
            await sender.execute("SELECT pg_notify('psqlpy_a', 'hello')")
        assert await asyncio.wait_for(got.get(), 10) == (1, "hello", "psqlpy_a", pid)
        await listener.add_callback("psqlpy_b", callback)
        await pool.execute("NOTIFY psqlpy_b, 'second'")
        assert (await asyncio.wait_for(got.get(), 10))[1:3] == ("second", "psqlpy_b")
        await listener.clear_channel_callbacks("psqlpy_a")
        await pool.execute("NOTIFY psqlpy_a, 'ignored'")
        await pool.execute("NOTIFY psqlpy_b, 'last'")
        assert (await asyncio.wait_for(got.get(), 10))[1] == "last"
        await listener.shutdown()
        assert listener.is_started is False
        with pytest.raises(exc.ListenerClosedError):
            await listener.add_callback("psqlpy_a", callback)
        with pytest.raises(exc.ListenerCallbackError):
            await pool.listener().add_callback("x", lambda *a: None)


@run_async
async def test_listener_as_an_async_iterator(pg: Any) -> None:
    with make_pool(pg) as pool:

        async def unused(*args: Any) -> None:
            raise AssertionError("callbacks run only after listen()")

        async with pool.listener() as listener:
            await listener.add_callback("psqlpy_it", unused)
            await pool.execute("NOTIFY psqlpy_it, 'one'")
            await pool.execute("NOTIFY psqlpy_it, 'two'")
            payloads = []
            async for msg in listener:
                payloads.append((msg.channel, msg.payload))
                if len(payloads) == 2:
                    break
            assert payloads == [("psqlpy_it", "one"), ("psqlpy_it", "two")]


@run_async
async def test_listener_listens_again_after_its_backend_is_terminated(pg: Any) -> None:
    with make_pool(pg) as pool:
        got: asyncio.Queue[str] = asyncio.Queue()

        async def callback(connection: Any, payload: str, channel: str, process_id: int) -> None:
            await got.put(payload)

        listener = pool.listener()
        await listener.add_callback("psqlpy_re", callback)
        await listener.startup()
        listener.listen()
        pid = await listener.connection.fetch_val("SELECT pg_backend_pid()")
        await pool.execute("SELECT pg_terminate_backend($1)", [pid])

        async def notified() -> bool:
            await pool.execute("NOTIFY psqlpy_re, 'after'")
            try:
                return await asyncio.wait_for(got.get(), 0.2) == "after"
            except asyncio.TimeoutError:
                return False

        await until(notified, lambda ok: ok, timeout=15)
        assert await listener.connection.fetch_val("SELECT pg_backend_pid()") != pid
        await listener.shutdown()


# ---------------------------------------------------------------------------
# side by side with psqlpy itself


@run_async
async def test_results_and_errors_match_psqlpy_itself(pg: Any) -> None:
    psqlpy = pytest.importorskip("psqlpy")
    import psqlpy.exceptions as psqlpy_exc

    async def observe(pool: Any) -> list[Any]:
        seen: list[Any] = []
        conn = await pool.connection()
        await conn.execute("CREATE TEMP TABLE s (id int, name text, j jsonb)")
        await conn.execute_many(
            "INSERT INTO s VALUES ($1, $2, $3)",
            [[1, "a", {"x": 1}], [2, None, [1, 2]]],
        )
        result = await conn.execute("SELECT * FROM s ORDER BY id")
        seen += [result.result(), result.result(as_tuple=True)]
        seen.append((await conn.fetch_row("SELECT * FROM s WHERE id = $1", [1])).result())
        seen.append(await conn.fetch_val("SELECT count(*) FROM s"))
        seen.append((await conn.execute("SELECT $(a)p::int AS a", {"a": 4})).result())
        for method in (conn.execute, conn.fetch_row, conn.fetch_val, conn.execute_batch):
            for query in ("SELEC 1", "SELECT 1/0"):
                try:
                    await method(query)
                except Exception as error:
                    # what psqlpy raised, ours must be too (it may be more)
                    seen.append(_caught(error))
        try:
            await conn.fetch_row("SELECT * FROM s")
        except Exception as error:
            seen.append(_caught(error))
        async with conn.transaction() as tx:
            cur = tx.cursor("SELECT id FROM s ORDER BY id", array_size=1)
            async with cur:
                seen.append([c.result() async for c in cur])
        conn.close()
        try:
            await conn.execute("SELECT 1")
        except Exception as error:
            seen.append(_caught(error))
        seen.append(pool.status().available)
        return seen

    def _caught(error: Exception) -> tuple[str, type]:
        return ("error", type(error))

    theirs_pool = psqlpy.ConnectionPool(dsn=pg.dsn, max_db_pool_size=2)
    try:
        theirs = await observe(theirs_pool)
    finally:
        theirs_pool.close()
    with make_pool(pg) as ours_pool:
        ours = await observe(ours_pool)
    assert len(ours) == len(theirs)
    for mine, psqlpys in zip(ours, theirs, strict=True):
        if isinstance(psqlpys, tuple) and psqlpys[0] == "error":
            # What psqlpy raised, ours is too (by name): the same ``except`` catches it.
            assert issubclass(mine[1], getattr(exc, psqlpys[1].__name__)), (mine, psqlpys)
        else:
            assert mine == psqlpys
    assert {n for n in dir(psqlpy_exc) if n[0].isupper()} <= set(dir(exc))
