"""Using the psycopg_pool façade: connections, blocks, callbacks, stats and logs.

Every test runs on both sides (``ConnectionPool`` in threads, ``AsyncConnectionPool`` on
asyncio) against the shared real server.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg_pool_harness import Side, Unhealthy, each_side, eventually, terminate, unique

from pgmarina.compat import psycopg_pool as facade

# ---------------------------------------------------------------------------------------------
# the connection handed out


@each_side
async def test_the_connection_handed_out_is_the_real_psycopg_connection(
    side: Side, pg: Any
) -> None:
    pool = await side.opened(pg.dsn, min_size=1)
    conn = await side.getconn(pool)
    raw = conn.raw
    assert type(raw) is side.connection_class
    assert isinstance(raw, side.connection_class)
    assert raw._pool is pool  # psycopg's hook: the pool that owns it, while it is out
    assert raw.info.backend_pid > 0
    assert raw.info.transaction_status == TransactionStatus.IDLE
    await side.putconn(pool, conn)
    assert raw._pool is None  # in the pool: owned, not lent
    assert not raw.closed


@each_side
async def test_conn_pool_putconn_gives_it_back_as_django_does(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, min_size=1, max_size=1)
    conn = await side.getconn(pool)
    pid = conn.pid
    await side.call(conn.raw._pool.putconn, conn.raw)
    again = await side.getconn(pool, timeout=2)
    assert again.pid == pid
    await side.putconn(pool, again)


@each_side
async def test_a_connection_class_of_ones_own_is_served(side: Side, pg: Any) -> None:
    from psycopg.rows import Row

    base = side.connection_class

    class Mine(base[Row]):  # type: ignore[misc, valid-type]
        pass

    pool = await side.opened(pg.dsn, min_size=1, connection_class=Mine)
    async with side.connection(pool) as conn:
        assert type(conn.raw) is Mine
    # psycopg_pool takes a generic alias too, such as Mine[TupleRow].
    from psycopg.rows import TupleRow

    alias = await side.opened(pg.dsn, min_size=1, connection_class=Mine[TupleRow])
    async with side.connection(alias) as conn:
        assert type(conn.raw) is Mine
        assert await conn.value("SELECT 5") == 5


@each_side
async def test_kwargs_reach_the_connect(side: Side, pg: Any) -> None:
    app = unique("app")
    pool = await side.opened(
        pg.dsn, min_size=1, kwargs={"autocommit": True, "application_name": app}
    )
    async with side.connection(pool) as conn:
        assert conn.raw.autocommit
        assert await conn.value("SHOW application_name") == app


@each_side
async def test_callable_conninfo_and_kwargs_are_called_at_every_connect(
    side: Side, pg: Any
) -> None:
    """psycopg_pool 3.3: both may be callables (a rotating password, say)."""
    calls: list[str] = []

    def conninfo() -> str:
        calls.append("conninfo")
        return str(pg.dsn)

    def kwargs() -> dict[str, Any]:
        calls.append("kwargs")
        return {"application_name": f"call{len(calls)}"}

    pool = await side.opened(conninfo, min_size=2, kwargs=kwargs)
    assert calls.count("conninfo") == calls.count("kwargs") == 2
    async with side.connection(pool) as conn:
        assert (await conn.value("SHOW application_name")).startswith("call")


def test_an_async_pool_takes_coroutine_functions_for_conninfo_and_kwargs(pg: Any) -> None:
    async def body() -> None:
        async def conninfo() -> str:
            return str(pg.dsn)

        async def kwargs() -> dict[str, Any]:
            return {"application_name": "from_a_coroutine"}

        async with (
            facade.AsyncConnectionPool(conninfo, kwargs=kwargs, min_size=1) as pool,
            pool.connection() as conn,
        ):
            cur = await conn.execute("SHOW application_name")
            assert await cur.fetchone() == ("from_a_coroutine",)

    asyncio.run(body())


# ---------------------------------------------------------------------------------------------
# the connection() block


@each_side
async def test_the_connection_block_commits_when_it_ends_normally(side: Side, pg: Any) -> None:
    table = unique("t")
    pool = await side.opened(pg.dsn, min_size=1)
    async with side.connection(pool) as conn:
        await conn.execute(f"CREATE TABLE {table} (x int)")
        await conn.execute(f"INSERT INTO {table} VALUES (1)")
        assert conn.status == "INTRANS"
    async with side.connection(pool) as conn:
        assert await conn.value(f"SELECT count(*) FROM {table}") == 1
        await conn.execute(f"DROP TABLE {table}")


@each_side
async def test_the_connection_block_rolls_back_when_it_raises(side: Side, pg: Any) -> None:
    table = unique("t")
    pool = await side.opened(pg.dsn, min_size=1, max_size=1)
    with pytest.raises(ZeroDivisionError):
        async with side.connection(pool) as conn:
            pid = conn.pid
            await conn.execute(f"CREATE TABLE {table} (x int)")
            1 / 0  # noqa: B018
    async with side.connection(pool) as conn:
        assert conn.pid == pid  # the connection was kept
        assert await conn.value(f"SELECT to_regclass('{table}') IS NULL")


@each_side
async def test_a_transaction_block_inside_works_on_the_real_connection(
    side: Side, pg: Any
) -> None:
    pool = await side.opened(pg.dsn, min_size=1)
    if side.is_async:
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT 1")
    else:

        def use() -> None:
            with pool.connection() as conn, conn.transaction():
                conn.execute("SELECT 1")

        await asyncio.to_thread(use)


@each_side
async def test_a_connection_block_cannot_be_entered_twice(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, min_size=2)
    cm = pool.connection()
    if side.is_async:
        async with cm:
            with pytest.raises(RuntimeError, match="already in use"):
                await cm.__aenter__()
    else:
        with cm, pytest.raises(RuntimeError, match="already in use"):
            cm.__enter__()
    assert pool.get_stats()["pool_available"] == 2


# ---------------------------------------------------------------------------------------------
# giving connections back


@each_side
async def test_putconn_rolls_back_an_open_transaction_and_says_so(
    side: Side, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    table = unique("t")
    pool = await side.opened(pg.dsn, min_size=1, max_size=1)
    conn = await side.getconn(pool)
    pid = conn.pid
    await conn.execute(f"CREATE TABLE {table} ()")
    assert conn.status == "INTRANS"
    await side.putconn(pool, conn)
    async with side.connection(pool) as again:
        assert again.pid == pid
        assert again.status == "IDLE"
        assert await again.value(f"SELECT to_regclass('{table}') IS NULL")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "INTRANS" in messages[0]
    assert caplog.records[0].name == "psycopg.pool"


@each_side
async def test_putconn_rolls_back_a_failed_transaction(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, min_size=1, max_size=1)
    conn = await side.getconn(pool)
    pid = conn.pid
    with pytest.raises(psycopg.ProgrammingError):
        await conn.execute("wat")
    assert conn.status == "INERROR"
    await side.putconn(pool, conn)
    async with side.connection(pool) as again:
        assert (again.pid, again.status) == (pid, "IDLE")


@each_side
async def test_a_connection_given_back_closed_is_replaced_and_counted_as_a_bad_return(
    side: Side, pg: Any
) -> None:
    pool = await side.opened(pg.dsn, min_size=1, max_size=1)
    async with side.connection(pool) as conn:
        pid = conn.pid
        await conn.close()
    await side.call(pool.wait, 5)
    async with side.connection(pool) as conn:
        assert conn.pid != pid
    stats = pool.get_stats()
    assert stats["returns_bad"] == 1
    assert stats["connections_lost"] == 0  # a bad return is not a connection found lost


@each_side
async def test_a_connection_given_back_mid_operation_is_closed(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, min_size=1, max_size=1)
    conn = await side.getconn(pool)
    pid = conn.pid
    conn.raw.pgconn.send_query(b"SELECT pg_sleep(0.2)")
    assert conn.status == "ACTIVE"
    await side.putconn(pool, conn)
    async with side.connection(pool, timeout=5) as again:
        assert again.pid != pid
        assert again.status == "IDLE"


@each_side
async def test_putconn_refuses_a_connection_that_is_not_out_of_this_pool(
    side: Side, pg: Any
) -> None:
    one = await side.opened(pg.dsn, min_size=1, name=unique("one"))
    two = await side.opened(pg.dsn, min_size=1, name=unique("two"))
    stranger = await side.call(side.connection_class.connect, pg.dsn)
    try:
        with pytest.raises(ValueError, match="doesn't come from it"):
            await side.putconn(one, stranger)
    finally:
        await side.call(stranger.close)
    conn = await side.getconn(one)
    with pytest.raises(ValueError, match=f"comes from pool '{one.name}'"):
        await side.putconn(two, conn)
    await side.putconn(one, conn)
    with pytest.raises(ValueError, match="given back already"):
        await side.putconn(one, conn)  # twice


@each_side
async def test_close_returns_makes_close_give_the_connection_back(side: Side, pg: Any) -> None:
    """psycopg_pool 3.3's close_returns (psycopg >= 3.3 asks conn._pool.close_returns)."""
    pool = await side.opened(pg.dsn, min_size=2, close_returns=True)
    conn = await side.getconn(pool)
    assert pool.get_stats()["pool_available"] == 1
    await conn.close()
    assert not conn.raw.closed
    assert pool.get_stats()["pool_available"] == 2
    await side.call(pool.close)
    assert conn.raw.closed


@each_side
async def test_closing_the_pool_leaves_a_connection_in_use_until_it_comes_back(
    side: Side, pg: Any
) -> None:
    pool = await side.opened(pg.dsn, min_size=2)
    async with side.connection(pool) as conn:
        await side.call(pool.close)  # does not wait for this connection, nor break it
        assert pool.closed
        assert await conn.value("SELECT 6") == 6
    assert conn.raw.closed  # closed as it came back
    assert pool.get_stats()["pool_size"] == 0


# ---------------------------------------------------------------------------------------------
# configure, reset, check


@each_side
async def test_configure_runs_once_per_new_connection_with_conn_pool_set(
    side: Side, pg: Any
) -> None:
    seen: list[Any] = []
    owners: list[Any] = []
    hook = side.hook(seen, sql="SET timezone TO 'Asia/Tokyo'", commit=True)

    def spy(raw: Any) -> Any:
        owners.append(raw._pool)
        return hook(raw)

    pool = await side.opened(pg.dsn, min_size=1, max_size=1, configure=spy)
    async with side.connection(pool) as conn:
        assert await conn.value("SHOW timezone") == "Asia/Tokyo"
        pid = conn.pid
    async with side.connection(pool) as conn:
        assert conn.pid == pid
        await conn.close()  # a replacement is configured too
    async with side.connection(pool, timeout=5) as conn:
        assert await conn.value("SHOW timezone") == "Asia/Tokyo"
    assert len(seen) == 2
    assert owners == [pool, pool]


@each_side
async def test_a_configure_that_leaves_a_transaction_open_gets_no_connection_into_the_pool(
    side: Side, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    pool = side.make(pg.dsn, min_size=1, configure=side.hook(sql="SELECT 1"))
    with pytest.raises(facade.PoolTimeout):
        await side.call(pool.open, wait=True, timeout=0.5)
    assert any("INTRANS" in r.getMessage() for r in caplog.records), caplog.text


@each_side
async def test_a_configure_that_raises_keeps_the_connection_out_and_is_logged(
    side: Side, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    pool = side.make(pg.dsn, min_size=1, configure=side.hook(sql="WAT"))
    with pytest.raises(facade.PoolTimeout):
        await side.call(pool.open, wait=True, timeout=0.5)
    assert "WAT" in caplog.records[0].getMessage()


@each_side
async def test_reset_runs_on_every_connection_given_back(side: Side, pg: Any) -> None:
    resets: list[Any] = []
    pool = await side.opened(
        pg.dsn, min_size=1, max_size=1,
        reset=side.hook(resets, sql="SET timezone TO 'UTC'", commit=True),
    )
    async with side.connection(pool) as conn:
        assert resets == []
        await conn.execute("SET timezone TO '+2:00'")
    async with side.connection(pool) as conn:
        assert len(resets) == 1
        assert await conn.value("SHOW timezone") == "UTC"
    assert len(resets) == 2


@each_side
async def test_a_reset_that_leaves_a_transaction_discards_the_connection(
    side: Side, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    pool = await side.opened(pg.dsn, min_size=1, max_size=1, reset=side.hook(sql="RESET ALL"))
    async with side.connection(pool) as conn:
        pid = conn.pid
    async with side.connection(pool, timeout=5) as conn:
        assert conn.pid != pid
    assert any("INTRANS" in r.getMessage() for r in caplog.records), caplog.text


@each_side
async def test_a_reset_that_fails_discards_the_connection(
    side: Side, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    pool = await side.opened(pg.dsn, min_size=1, max_size=1, reset=side.hook(sql="WAT"))
    async with side.connection(pool) as conn:
        pid = conn.pid
    async with side.connection(pool, timeout=5) as conn:
        assert conn.pid != pid
    assert "WAT" in caplog.records[0].getMessage()


@each_side
async def test_check_runs_on_every_connection_handed_out_even_a_new_one(
    side: Side, pg: Any
) -> None:
    checked: list[Any] = []
    pool = await side.opened(pg.dsn, min_size=1, max_size=2, check=side.hook(checked))
    async with side.connection(pool) as one:
        async with side.connection(pool) as two:  # a new connection, handed to a waiter
            assert [c is two.raw for c in checked] == [False, True]
        assert checked[0] is one.raw
    async with side.connection(pool):
        pass
    assert len(checked) == 3


@each_side
async def test_a_check_that_always_fails_hands_out_nothing_and_times_out(
    side: Side, pg: Any
) -> None:
    pool = side.make(pg.dsn, min_size=1, check=side.hook(fail=True), timeout=1.0)
    await side.call(pool.open)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(facade.PoolTimeout) as info:
        async with side.connection(pool):
            raise AssertionError("a connection that failed its check was handed out")
    assert 0.9 < loop.time() - start < 2.0
    assert isinstance(info.value.__cause__, Unhealthy)


@each_side
async def test_a_connection_failing_its_check_is_set_aside_and_the_next_one_is_handed_out(
    side: Side, pg: Any
) -> None:
    checked: list[Any] = []
    pool = await side.opened(pg.dsn, min_size=2, check=side.hook(checked, fail_first=1))
    async with side.connection(pool, timeout=5) as conn:
        assert conn.raw is checked[-1]
        assert len(checked) >= 2


@each_side
async def test_a_check_that_leaves_a_failed_transaction_gets_its_connection_rolled_back(
    side: Side, pg: Any
) -> None:
    pool = await side.opened(pg.dsn, min_size=1, max_size=1, check=side.hook(sql="wat"))
    with pytest.raises(facade.PoolTimeout):
        await side.getconn(pool, timeout=0.5)
    stats = pool.get_stats()  # the connection was rolled back and kept
    assert stats["pool_available"] == 1 and stats["pool_size"] == 1
    assert stats["connections_lost"] == 0


@each_side
async def test_check_connection_is_a_check_callback_that_finds_a_dead_connection(
    side: Side, pg: Any
) -> None:
    admin = await side.admin(pg)
    cls = side.cls()
    pool = await side.opened(pg.dsn, min_size=1, max_size=1, check=cls.check_connection)
    async with side.connection(pool) as conn:
        pid = conn.pid
    await terminate(admin, pid)
    async with side.connection(pool, timeout=5) as conn:
        assert conn.pid != pid
        assert conn.status == "IDLE"
    assert pool.get_stats()["connections_lost"] == 1


@each_side
@pytest.mark.parametrize("autocommit", [False, True])
async def test_check_connection_checks_in_autocommit_and_restores_the_mode(
    side: Side, pg: Any, autocommit: bool
) -> None:
    admin = await side.admin(pg)
    conn = await side.call(side.connection_class.connect, pg.dsn, autocommit=autocommit)
    try:
        await side.call(side.cls().check_connection, conn)
        assert conn.autocommit is autocommit
        assert conn.info.transaction_status == TransactionStatus.IDLE
        await terminate(admin, conn.info.backend_pid)
        with pytest.raises(psycopg.OperationalError):
            await side.call(side.cls().check_connection, conn)
        assert conn.closed
    finally:
        await side.call(conn.close)


# ---------------------------------------------------------------------------------------------
# administration


@each_side
async def test_check_replaces_the_broken_idle_connections_and_logs_once(
    side: Side, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    admin = await side.admin(pg)
    pool = await side.opened(pg.dsn, min_size=3)
    conns = [await side.getconn(pool) for _ in range(3)]
    pids = [c.pid for c in conns]
    for conn in conns:
        await side.putconn(pool, conn)
    await terminate(admin, pids[0])
    assert not caplog.records
    await side.call(pool.check)
    assert len(caplog.records) == 1, caplog.text
    await side.call(pool.wait, 5)
    held = [await side.getconn(pool) for _ in range(3)]
    assert {c.pid for c in held} & set(pids) == set(pids[1:])
    for conn in held:
        await side.putconn(pool, conn)
    assert pool.get_stats()["connections_lost"] == 1


@each_side
async def test_drain_replaces_every_connection(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, min_size=2)
    out = await side.getconn(pool)
    idle = await side.getconn(pool)
    old = {out.pid, idle.pid}
    await side.putconn(pool, idle)
    await side.call(pool.drain)
    await side.putconn(pool, out)  # out during the drain: replaced when it came back
    await side.call(pool.wait, 5)
    conns = [await side.getconn(pool) for _ in range(2)]
    assert not {c.pid for c in conns} & old
    for conn in conns:
        await side.putconn(pool, conn)


@each_side
async def test_resize_grows_the_pool_and_bad_sizes_are_refused(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, min_size=1)
    await side.call(pool.resize, 3)
    assert (pool.min_size, pool.max_size) == (3, 3)
    await side.call(pool.wait, 5)
    assert pool.get_stats()["pool_size"] == 3
    await side.call(pool.resize, 1, 2)
    assert (pool.min_size, pool.max_size) == (1, 2)
    assert pool.get_stats()["pool_max"] == 2
    for lo, hi in [(0, 0), (-1, None), (4, 2)]:
        with pytest.raises(ValueError):
            await side.call(pool.resize, lo, hi)
    assert (pool.min_size, pool.max_size) == (1, 2)


@each_side
async def test_reconnect_failed_is_called_with_the_pool_after_reconnect_timeout(
    side: Side,
) -> None:
    from test_psycopg_pool_facade_api import _dead_dsn

    told: list[Any] = []
    pool = side.make(_dead_dsn(), min_size=1, reconnect_timeout=0.3,
                     reconnect_failed=told.append, name=unique("failing"))
    await side.call(pool.open)
    await eventually(lambda: told, timeout=5, what="reconnect_failed called")
    assert told == [pool]


def test_an_async_pool_awaits_a_coroutine_reconnect_failed(pg: Any) -> None:
    from test_psycopg_pool_facade_api import _dead_dsn

    async def body() -> None:
        told = asyncio.Event()

        async def failed(pool: Any) -> None:
            assert isinstance(pool, facade.AsyncConnectionPool)
            told.set()

        pool = facade.AsyncConnectionPool(
            _dead_dsn(), min_size=1, reconnect_timeout=0.2, reconnect_failed=failed, open=False
        )
        await pool.open()
        try:
            await asyncio.wait_for(told.wait(), 5)
        finally:
            await pool.close()

    asyncio.run(body())


# ---------------------------------------------------------------------------------------------
# stats


@each_side
async def test_stats_count_under_psycopg_pools_names(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, min_size=2, max_size=2, timeout=0.2)
    stats = pool.get_stats()
    assert set(stats) == {
        "pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting",
        "requests_num", "requests_queued", "requests_wait_ms", "requests_errors", "usage_ms",
        "returns_bad", "connections_num", "connections_ms", "connections_errors",
        "connections_lost",
    }  # fmt: skip
    assert (stats["pool_min"], stats["pool_max"], stats["pool_size"]) == (2, 2, 2)
    assert stats["connections_num"] == 2 and stats["connections_ms"] > 0
    one = await side.getconn(pool)
    two = await side.getconn(pool)
    with pytest.raises(facade.PoolTimeout):
        await side.getconn(pool)  # queued, then timed out
    waiter = side.spawn(pool.getconn, 5)
    await eventually(lambda: pool.get_stats()["requests_waiting"] == 1)
    await asyncio.sleep(0.1)
    await side.putconn(pool, one)
    three = await waiter
    await side.putconn(pool, two)
    await side.putconn(pool, three)
    stats = pool.get_stats()
    assert stats["requests_num"] == 4
    assert stats["requests_queued"] == 2
    assert stats["requests_errors"] == 1
    assert stats["requests_wait_ms"] >= 100  # the served one waited 100 ms at least
    assert stats["usage_ms"] >= 100
    assert stats["pool_available"] == 2 and stats["requests_waiting"] == 0

    popped = pool.pop_stats()
    assert popped["requests_num"] == 4
    after = pool.get_stats()
    assert after["requests_num"] == after["connections_num"] == after["usage_ms"] == 0
    assert after["pool_size"] == 2  # sizes are not counters
    async with side.connection(pool):
        pass
    assert pool.get_stats()["requests_num"] == 1


@each_side
async def test_a_request_refused_for_a_closed_pool_counts_as_a_failed_request(
    side: Side, pg: Any
) -> None:
    pool = await side.opened(pg.dsn, min_size=1)
    await side.call(pool.close)
    with pytest.raises(facade.PoolClosed):
        await side.getconn(pool)
    stats = pool.get_stats()
    assert (stats["requests_num"], stats["requests_errors"]) == (1, 1)


# ---------------------------------------------------------------------------------------------
# logs


@each_side
async def test_logs_go_to_pgmarinas_tree_unless_psycopg_pool_is_set_up_and_never_to_both(
    side: Side, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await side.opened(pg.dsn, min_size=1, max_size=1)

    async def dirty_return() -> None:
        conn = await side.getconn(pool)
        await conn.execute("SELECT 1")
        await side.putconn(pool, conn)

    with caplog.at_level(logging.WARNING, logger="pgmarina"):
        await dirty_return()
    assert [r.name for r in caplog.records] == ["pgmarina.compat.psycopg_pool"]
    caplog.clear()
    caplog.set_level(logging.INFO, logger="psycopg.pool")
    await dirty_return()
    names = {r.name for r in caplog.records}
    assert names == {"psycopg.pool"}, names
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "connection requested from" in messages
    assert "connection given by" in messages
    assert "returning connection to" in messages
    assert "INTRANS" in messages


@each_side
async def test_the_pools_own_warnings_reach_a_psycopg_pool_logger(
    side: Side, caplog: pytest.LogCaptureFixture
) -> None:
    """The shell's messages (here: connect failures) follow the same rule."""
    from test_psycopg_pool_facade_api import _dead_dsn

    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    pool = side.make(_dead_dsn(), min_size=1)
    await side.call(pool.open)
    await eventually(lambda: caplog.records, timeout=5)
    assert caplog.records[0].name == "psycopg.pool"
    assert "connect failed" in caplog.records[0].getMessage()


@each_side
async def test_repr_is_one_line_with_the_sizes_and_no_password(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn + "?password=hunter2", min_size=1, name="reporting")
    text = repr(pool)
    assert "\n" not in text and "hunter2" not in text
    assert "'reporting'" in text and "open" in text and "1 idle" in text


@each_side
async def test_a_wrong_timeout_is_refused_naming_it_and_takes_nothing(side: Side, pg: Any) -> None:
    """Even with a connection idle, so that it need not wait: checked before anything
    is taken (the async getconn took the idle connection first, and kept it)."""
    pool = await side.opened(pg.dsn, min_size=1, max_size=1)
    for bad, error in [(-1, ValueError), ("1", TypeError), (float("nan"), ValueError)]:
        with pytest.raises(error, match="timeout"):
            await side.getconn(pool, timeout=bad)
    stats = pool.get_stats()
    assert (stats["pool_available"], stats["pool_size"]) == (1, 1)
    assert pool._leases == {}


@each_side
async def test_a_pool_timeout_message_says_why(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, min_size=1, max_size=1)
    conn = await side.getconn(pool)
    with pytest.raises(facade.PoolTimeout, match="all in use") as info:
        await side.getconn(pool, timeout=0.1)
    assert pool.name in str(info.value)
    await side.putconn(pool, conn)
