"""``PgMarinaPool`` under ``create_async_engine``, on asyncpg and psycopg, against real servers.

SQLAlchemy's async engines run the pool's synchronous API in greenlets; the
pool waits on pgmarina's ``AsyncPool`` from there.  Each test runs on both
drivers, in an event loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pgmarina
from helpers import backend_pids, eventually
from pgmarina.contrib.sqlalchemy import PgMarinaPool, PoolTimeout

DRIVERS = ["asyncpg", "psycopg"]


def _run(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop (pytest-asyncio is off here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


async def _gone(server: Any, app: str, pids: set[int]) -> None:
    await eventually(lambda: not backend_pids(server, app) & pids, what=f"backends {pids} gone")


def _new_engine(server: Any, driver: str, app: str, **kw: Any) -> AsyncEngine:
    """An async engine on PgMarinaPool whose backends carry the application_name ``app``."""
    args = (
        {"server_settings": {"application_name": app}}
        if driver == "asyncpg"
        else {"application_name": app}
    )
    url = sa.make_url(server.dsn).set(drivername=f"postgresql+{driver}")
    return create_async_engine(url, poolclass=PgMarinaPool, connect_args=args, **kw)


@contextlib.asynccontextmanager
async def _engine(server: Any, driver: str, **kw: Any) -> AsyncIterator[tuple[AsyncEngine, str]]:
    app = f"sqla_{uuid.uuid4().hex[:10]}"
    kw.setdefault("pool_size", 1)
    kw.setdefault("max_overflow", 2)
    engine = _new_engine(server, driver, app, **kw)
    try:
        yield engine, app
    finally:
        await engine.dispose()


async def _pid(conn: Any) -> int:
    return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _settled(engine: AsyncEngine) -> None:
    inner = engine.pool.pgmarina_pool  # type: ignore[attr-defined]
    await eventually(
        lambda: inner.stats().in_use == 0 and inner.stats().connecting == 0,
        what=f"{inner!r} settled",
    )


class _Base(DeclarativeBase):
    pass


class _Item(_Base):
    __tablename__ = "sqla_pgmarina_item"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_engines_run_on_pgmarinas_async_pool(pg: Any, driver: str) -> None:
    async with _engine(pg, driver, pool_size=2, max_overflow=3) as (engine, _):
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        inner = engine.pool.pgmarina_pool  # type: ignore[attr-defined]
        assert isinstance(inner, pgmarina.AsyncPool)
        assert (inner.driver, inner.min_size, inner.max_size) == (driver, 2, 5)


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_core_and_orm_transactions(pg: Any, driver: str) -> None:
    async with _engine(pg, driver) as (engine, _):
        async with engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
            await conn.run_sync(_Base.metadata.create_all)
        try:
            async with AsyncSession(engine) as session, session.begin():
                session.add_all([_Item(name="a"), _Item(name="b")])
            async with AsyncSession(engine) as session:
                session.add(_Item(name="rolled back"))
                await session.flush()
                await session.rollback()
            with pytest.raises(ZeroDivisionError):
                async with engine.begin() as conn:
                    await conn.execute(sa.insert(_Item).values(name="also rolled back"))
                    raise ZeroDivisionError
            async with AsyncSession(engine) as session:
                names = (await session.scalars(sa.select(_Item.name).order_by(_Item.id))).all()
            assert names == ["a", "b"]
        finally:
            async with engine.begin() as conn:
                await conn.run_sync(_Base.metadata.drop_all)
        await _settled(engine)


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_engines_keep_their_isolation_levels_and_one_record_per_connection(
    pg: Any, driver: str
) -> None:
    query = text("SELECT current_setting('transaction_isolation')")
    async with _engine(pg, driver, isolation_level="SERIALIZABLE") as (strict, app), _engine(
        pg, driver
    ) as (plain, _):
        connects: list[Any] = []
        event.listen(strict.sync_engine, "connect", lambda dbapi, rec: connects.append(dbapi))
        for _ in range(3):
            async with strict.connect() as s, strict.connect() as s2, plain.connect() as p:
                assert (await s.execute(query)).scalar_one() == "serializable"
                assert (await s2.execute(query)).scalar_one() == "serializable"
                assert (await p.execute(query)).scalar_one() == "read committed"
        assert len(connects) == len(backend_pids(pg, app)) == 2


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_invalidation_drops_the_connection_in_pgmarina(pg: Any, driver: str) -> None:
    async with _engine(pg, driver, pool_size=1, max_overflow=0) as (engine, app):
        seen: list[str] = []
        for name in ("invalidate", "close", "connect"):
            event.listen(engine.sync_engine, name, lambda *a, _n=name: seen.append(_n))
        async with engine.connect() as conn:
            old = await _pid(conn)
            await conn.invalidate()
        await _gone(pg, app, {old})
        async with engine.connect() as conn:
            assert await _pid(conn) != old
        assert seen == ["connect", "invalidate", "close", "connect"]
        await _settled(engine)


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_pool_timeout_raises_both_timeout_errors(pg: Any, driver: str) -> None:
    async with _engine(pg, driver, pool_size=1, max_overflow=0, pool_timeout=0.2) as (engine, _):
        async with engine.connect():
            with pytest.raises(PoolTimeout) as caught:
                await engine.connect().start()
        assert isinstance(caught.value, exc.TimeoutError)
        await _settled(engine)


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_pool_timeout_zero_still_connects_and_refuses_only_a_full_pool(
    pg: Any, driver: str
) -> None:
    async with _engine(pg, driver, pool_size=1, max_overflow=1, pool_timeout=0) as (engine, _):
        async with engine.connect() as a, engine.connect() as b:  # both connect
            assert await _pid(a) != await _pid(b)
            t0 = time.monotonic()
            with pytest.raises(PoolTimeout):
                await engine.connect().start()
            assert time.monotonic() - t0 < 1
        await _settled(engine)


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_tasks_share_the_engine_and_cancelled_ones_leak_nothing(
    pg: Any, driver: str
) -> None:
    async with _engine(pg, driver, pool_size=2, max_overflow=2) as (engine, app):

        async def work(n: int) -> None:
            for i in range(10):
                async with engine.connect() as conn:
                    await _pid(conn)
                    if (n + i) % 9 == 0:
                        await conn.invalidate()
                    await asyncio.sleep(0)

        await asyncio.gather(*(work(n) for n in range(40)))
        # Cancel tasks while they queue for a connection, hold one, or run a query.
        tasks = [asyncio.ensure_future(work(n)) for n in range(40)]
        await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _settled(engine)
        inner = engine.pool.pgmarina_pool  # type: ignore[attr-defined]
        assert inner.stats().size <= 4
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await eventually(lambda: len(backend_pids(pg, app)) == inner.stats().size)
        async with engine.connect() as conn:
            await _pid(conn)


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_dispose_closes_idle_connections_and_the_engine_goes_on(
    pg: Any, driver: str
) -> None:
    async with _engine(pg, driver, pool_size=1, max_overflow=1) as (engine, app):
        held = await engine.connect()
        kept = await _pid(held)
        async with engine.connect() as conn:
            idle = await _pid(conn)
        await engine.dispose()
        await _gone(pg, app, {idle})
        assert kept in backend_pids(pg, app)
        await held.close()
        await _gone(pg, app, {kept})
        async with engine.connect() as conn:
            assert await _pid(conn) not in (idle, kept)


@pytest.mark.slow
@pytest.mark.private_cluster
@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_pre_ping_rides_out_a_server_restart(private_pg: Any, driver: str) -> None:
    async with _engine(
        private_pg, driver, pool_size=2, max_overflow=0, pool_pre_ping=True,
        pool_options={"check_window": None},
    ) as (engine, _):
        async with engine.connect() as a, engine.connect() as b:
            before = {await _pid(a), await _pid(b)}
        await asyncio.to_thread(private_pg.restart)
        for _ in range(4):
            async with engine.connect() as conn:
                assert await _pid(conn) not in before
        await _settled(engine)


@pytest.mark.slow
@pytest.mark.private_cluster
@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_without_pre_ping_a_restart_costs_at_most_one_invalidated_statement(
    private_pg: Any, driver: str
) -> None:
    """asyncpg notices the lost connections while they sit idle, so pgmarina drops them
    before anyone gets one; psycopg finds out at the first statement, which fails with
    ``connection_invalidated`` and invalidates the pool, and every later one works."""
    async with _engine(
        private_pg, driver, pool_size=2, max_overflow=0, pool_options={"check_window": None}
    ) as (engine, _):
        async with engine.connect() as a, engine.connect() as b:
            before = {await _pid(a), await _pid(b)}
        await asyncio.to_thread(private_pg.restart)
        failed = 0
        for _ in range(5):
            try:
                async with engine.connect() as conn:
                    assert await _pid(conn) not in before
            except exc.DBAPIError as e:
                assert e.connection_invalidated
                failed += 1
        assert failed <= 1
        await _settled(engine)


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_async_engine_disposed_on_one_loop_serves_the_next(pg: Any, driver: str) -> None:
    url = sa.make_url(pg.dsn).set(drivername=f"postgresql+{driver}")
    engine = create_async_engine(url, poolclass=PgMarinaPool, pool_size=1)
    pools = []

    async def use() -> None:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        pools.append(engine.pool.pgmarina_pool)  # type: ignore[attr-defined]
        await engine.dispose()

    asyncio.run(use())
    asyncio.run(use())
    assert pools[0] is not pools[1] and pools[0].closed and pools[1].closed


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_an_async_rejected_connect_raises_sqlalchemys_operational_error(
    pg: Any, driver: str
) -> None:
    url = sa.make_url(pg.dsn).set(
        drivername=f"postgresql+{driver}", database=f"no_such_db_{uuid.uuid4().hex[:6]}"
    )
    engine = create_async_engine(url, poolclass=PgMarinaPool, pool_timeout=20)
    seen: list[BaseException] = []
    sa.event.listen(
        engine.sync_engine, "handle_error", lambda ctx: seen.append(ctx.original_exception)
    )
    try:
        t0 = time.monotonic()
        with pytest.raises(exc.DBAPIError, match="does not exist") as caught:
            await engine.connect().start()
        assert time.monotonic() - t0 < 10  # no wait for pool_timeout
        # The (async-adapted) driver error, wrapped by the engine after its
        # handle_error event saw it, as with SQLAlchemy's own pools.
        driver_error = caught.value.__cause__
        assert isinstance(driver_error, engine.dialect.loaded_dbapi.Error)
        assert seen == [driver_error]
        assert isinstance(driver_error.__context__, pgmarina.PoolConnectError)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_an_async_engine_dropped_undisposed_closes_its_connections(
    pg: Any, driver: str
) -> None:
    """Nothing holds an engine's pool from pgmarina's side: dropped without
    ``dispose()``, it is collected and its connections are cut off."""
    app = f"sqla_{uuid.uuid4().hex[:10]}"
    engine = _new_engine(pg, driver, app, pool_size=2)
    async with engine.connect() as a, engine.connect() as b:
        await _pid(a)
        await _pid(b)
    assert len(backend_pids(pg, app)) == 2
    del engine, a, b
    gc.collect()
    await eventually(lambda: not backend_pids(pg, app), what="the dropped engine's backends gone")


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_creator_runs_once_per_connection_a_checkout_needs(
    pg: Any, driver: str
) -> None:
    """``async_creator`` runs only for connections checkouts need (none ahead
    of them, as in QueuePool)."""
    calls: list[int] = []

    async def async_creator() -> Any:
        calls.append(1)
        if driver == "asyncpg":
            import asyncpg

            return await asyncpg.connect(pg.dsn)
        return await psycopg.AsyncConnection.connect(pg.dsn)

    url = sa.make_url(pg.dsn).set(drivername=f"postgresql+{driver}")
    engine = create_async_engine(
        url, poolclass=PgMarinaPool, async_creator=async_creator, pool_size=3, max_overflow=0
    )
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
        await asyncio.sleep(0.1)  # room for a fill that must not come
        assert len(calls) == 1
        assert engine.pool.pgmarina_pool.stats().size == 1  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_do_connect_gets_the_record_its_connection_keeps(
    pg: Any, driver: str
) -> None:
    async with _engine(pg, driver, pool_size=2, max_overflow=0) as (engine, _):
        records: list[Any] = []

        @event.listens_for(engine.sync_engine, "do_connect")
        def do_connect(dialect: Any, rec: Any, cargs: Any, cparams: Any) -> None:
            assert rec is not None
            records.append(rec)
            rec.info["n"] = len(records)

        async with engine.connect() as a, engine.connect() as b:
            for conn, n in ((a, 1), (b, 2)):
                raw = await conn.get_raw_connection()
                assert raw._connection_record is records[n - 1] and raw.info["n"] == n


@_run
async def test_async_psycopg_hstore_works_on_every_connection_the_pool_opens(pg: Any) -> None:
    from sqlalchemy.dialects.postgresql import HSTORE

    async with await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) as admin:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS hstore")
    query = sa.select(sa.cast(sa.bindparam("h", {"a": "1"}, type_=HSTORE), HSTORE))
    async with (
        _engine(pg, "psycopg", pool_size=3, max_overflow=0) as (engine, _),
        engine.connect() as a, engine.connect() as b, engine.connect() as c,
    ):
        for conn in (a, b, c):
            assert (await conn.execute(query)).scalar_one() == {"a": "1"}


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_checkout_event_disconnect_moves_the_record_to_a_fresh_connection(
    pg: Any, driver: str
) -> None:
    async with _engine(pg, driver, pool_size=2, max_overflow=0) as (engine, app):
        inner = engine.pool.pgmarina_pool  # type: ignore[attr-defined]
        async with engine.connect() as a, engine.connect() as b:
            pids = {await _pid(a), await _pid(b)}
        refuse = [True]

        @event.listens_for(engine.sync_engine, "checkout")
        def once(dbapi: Any, rec: Any, proxy: Any) -> None:
            if refuse and refuse.pop():
                raise exc.DisconnectionError("refused once by the test")

        async with engine.connect() as conn:
            pid = await _pid(conn)
            assert inner.stats().in_use == 1
        await _settled(engine)
        await eventually(lambda: len(pids - backend_pids(pg, app)) == 1, what="refused one closed")
        assert pid in backend_pids(pg, app)
        assert inner.stats().size <= 2


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_soft_invalidated_and_detached_connections_leave_the_pool(
    pg: Any, driver: str
) -> None:
    async with _engine(pg, driver, pool_size=1, max_overflow=0) as (engine, app):
        inner = engine.pool.pgmarina_pool  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            soft = await _pid(conn)
            (await conn.get_raw_connection()).invalidate(soft=True)
        await _gone(pg, app, {soft})
        async with engine.connect() as conn:
            mine = await _pid(conn)
            assert mine != soft
            await conn.run_sync(lambda sync_conn: sync_conn.detach())
            assert inner.stats().in_use == 0
            async with engine.connect() as other:  # a replacement, though max_size is 1
                assert await _pid(other) != mine
            assert await _pid(conn) == mine  # pgmarina left the detached one alone
            driver_connection = (await conn.get_raw_connection()).dbapi_connection.driver_connection
        # Its user closes it: SQLAlchemy closes a detached connection when the block
        # ends with asyncpg, not with psycopg.
        await driver_connection.close()
        await _gone(pg, app, {mine})
        await _settled(engine)


@pytest.mark.slow
@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_random_mix_with_cancels_and_disposes_leaks_nothing(
    pg: Any, driver: str
) -> None:
    """Tasks check out, invalidate, time out, get cancelled and dispose the pool at random;
    afterwards every backend of the engine is one the pool holds, and nothing is leased."""
    import random

    async with _engine(pg, driver, pool_size=2, max_overflow=2, pool_timeout=0.5) as (
        engine,
        app,
    ):
        loop = asyncio.get_running_loop()
        stop = loop.time() + 2.0

        async def work(seed: int) -> None:
            rng = random.Random(seed)
            while loop.time() < stop:
                roll = rng.random()
                try:
                    async with engine.connect() as conn:
                        await _pid(conn)
                        if roll < 0.1:
                            await conn.invalidate()
                        elif roll < 0.13:
                            engine.pool.dispose()  # from a coroutine: the close runs in a task
                        elif roll < 0.16 and seed == 0:
                            # A new pool; leases go back to the old one.  (One task only:
                            # two engine.dispose() racing make SQLAlchemy drop a pool.)
                            await engine.dispose()
                        elif roll < 0.2:
                            await conn.commit()
                except PoolTimeout:
                    pass

        async def canceller() -> None:
            rng = random.Random(99)
            while loop.time() < stop:
                victim = asyncio.ensure_future(work(rng.randrange(1000)))
                await asyncio.sleep(rng.random() * 0.02)
                victim.cancel()
                await asyncio.gather(victim, return_exceptions=True)

        await asyncio.gather(*(work(n) for n in range(20)), canceller())
        await _settled(engine)
        inner = engine.pool.pgmarina_pool  # type: ignore[attr-defined]
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await eventually(
            lambda: len(backend_pids(pg, app)) == inner.stats().size,
            what="the engine's backends are the ones its pool holds",
        )


@pytest.mark.parametrize("driver", DRIVERS)
@_run
async def test_async_dispose_without_close_closes_in_process_and_abandons_in_a_child(
    pg: Any, driver: str
) -> None:
    async with _engine(pg, driver, pool_size=2, max_overflow=0) as (engine, app):
        async with engine.connect() as a, engine.connect() as b:
            first = {await _pid(a), await _pid(b)}
        await engine.dispose(close=False)  # same process: the old pool is disposed
        await _gone(pg, app, first)
        async with engine.connect() as a, engine.connect() as b:
            second = {await _pid(a), await _pid(b)}
        old = engine.pool.pgmarina_pool  # type: ignore[attr-defined]
        conns = [e.conn for e in old._core.entries if e.conn is not None]
        engine.pool._opened_in = -1  # type: ignore[attr-defined]  # as in a forked child
        await engine.dispose(close=False)
        await old.close()  # as the collector would: neither may reach them
        assert second <= backend_pids(pg, app)
        for raw in conns:
            await raw.close()  # the test's own cleanup
        await _gone(pg, app, second)
