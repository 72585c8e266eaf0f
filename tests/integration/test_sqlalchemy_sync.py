"""``PgMarinaPool`` under ``create_engine``, on psycopg and psycopg2, against real servers.

Each test runs on both drivers.  What SQLAlchemy's users rely on is checked
through SQLAlchemy (Core, ORM, events, invalidation); what pgmarina must do
underneath (one pool per engine, no connection leaked or double-handed) is
checked on the pgmarina pool and on the server's ``pg_stat_activity``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event, exc, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import pgmarina
from helpers import backend_pids
from pgmarina.contrib.sqlalchemy import PgMarinaPool, PoolTimeout

DRIVERS = ["psycopg", "psycopg2"]


def _url(server: Any, driver: str) -> sa.URL:
    return sa.make_url(server.dsn).set(drivername=f"postgresql+{driver}")


def _on_threads(work: Callable[[int], None], n: int) -> None:
    """Run ``work(0)`` ... ``work(n - 1)`` on threads of their own, together;
    fail with the first error one of them raised."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]


def _new_engine(server: Any, driver: str, app: str, **kw: Any) -> sa.Engine:
    """An engine on PgMarinaPool whose backends carry the application_name ``app``."""
    return sa.create_engine(
        _url(server, driver),
        poolclass=PgMarinaPool,
        connect_args={"application_name": app},
        **kw,
    )


@contextlib.contextmanager
def _engine(server: Any, driver: str, **kw: Any) -> Iterator[tuple[sa.Engine, str]]:
    """An engine on PgMarinaPool whose backends carry an application_name of their own."""
    app = f"sqla_{uuid.uuid4().hex[:10]}"
    kw.setdefault("pool_size", 1)
    kw.setdefault("max_overflow", 2)
    engine = _new_engine(server, driver, app, **kw)
    try:
        yield engine, app
    finally:
        engine.dispose()


def _gone(server: Any, app: str, pids: set[int], timeout: float = 5.0) -> bool:
    """Whether the backends ``pids`` end within ``timeout`` (a backend exits soon after
    its client closes, not at once)."""
    deadline = time.monotonic() + timeout
    while backend_pids(server, app) & pids:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _pid(conn: sa.Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _settled(pool: Any, timeout: float = 5.0) -> None:
    """Wait until the pgmarina pool has nothing leased and nothing connecting."""
    deadline = time.monotonic() + timeout
    while True:
        s = pool.stats()
        if s.in_use == 0 and s.connecting == 0:
            return
        assert time.monotonic() < deadline, f"pool did not settle: {pool!r}"
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# construction


def test_every_pool_parameter_reaches_create_engine_because_none_is_keyword_only() -> None:
    params = inspect.signature(PgMarinaPool.__init__).parameters.values()
    assert not [p.name for p in params if p.kind is p.KEYWORD_ONLY]


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_engine_pool_arguments_set_the_pgmarina_pool(pg: Any, driver: str) -> None:
    with _engine(
        pg, driver, pool_size=2, max_overflow=3, pool_timeout=7, pool_recycle=600,
        pool_options={"max_idle": 60, "name": "orders"},
    ) as (engine, _):
        pool = engine.pool
        assert isinstance(pool, PgMarinaPool)
        inner = pool.pgmarina_pool
        assert isinstance(inner, pgmarina.Pool)
        assert (inner.min_size, inner.max_size, inner.timeout) == (2, 5, 7)
        assert inner.name == "orders"
        assert inner.driver == driver
        assert pool.size() == 5


def test_pre_ping_replaces_pgmarinas_own_check_unless_pool_options_set_it(pg: Any) -> None:
    url = _url(pg, "psycopg")
    settings = {
        (pre_ping, tuple(options.items())): sa.create_engine(
            url, poolclass=PgMarinaPool, pool_pre_ping=pre_ping, pool_options=options
        ).pool.pgmarina_pool._config.check_window
        for pre_ping in (False, True)
        for options in ({}, {"check_window": 5.0})
    }
    assert settings == {
        (False, ()): 2.0,  # pgmarina's default: a connection idle past 2 s is checked
        (True, ()): None,  # SQLAlchemy pings it: no second round trip
        (False, (("check_window", 5.0),)): 5.0,
        (True, (("check_window", 5.0),)): 5.0,
    }


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("use_lifo", [False, True, None], ids=["fifo", "lifo", "default"])
def test_pool_use_lifo_sets_the_idle_order(pg: Any, driver: str, use_lifo: bool | None) -> None:
    """pool_use_lifo=False: the connection idle longest goes out first, as in QueuePool;
    True, or left out (pgmarina's default): the most recently used."""
    lifo = use_lifo is not False
    kw: dict[str, Any] = {} if use_lifo is None else {"pool_use_lifo": use_lifo}
    with _engine(pg, driver, pool_size=3, max_overflow=0, **kw) as (engine, _):
        with engine.connect(), engine.connect(), engine.connect():
            pass  # three connections, opened as needed; pool_size keeps them
        assert engine.pool.pgmarina_pool.stats().idle == 3
        pids = []
        for _ in range(6):
            with engine.connect() as c:
                pids.append(_pid(c))
        if lifo:
            assert len(set(pids)) == 1, pids  # the most recently used, every time
        else:
            assert len(set(pids[:3])) == 3 and pids[3:] == pids[:3], pids  # in turn


def test_bad_pool_arguments_are_refused_naming_them(pg: Any) -> None:
    url = _url(pg, "psycopg")
    with pytest.raises(ValueError, match="max_overflow"):
        sa.create_engine(url, poolclass=PgMarinaPool, max_overflow=-1)
    with pytest.raises(TypeError, match="'max_sise'"):
        sa.create_engine(url, poolclass=PgMarinaPool, pool_options={"max_sise": 3})
    with pytest.raises(TypeError, match="min_size"):
        sa.create_engine(url, poolclass=PgMarinaPool, pool_options={"min_size": 3})
    with pytest.raises(TypeError, match=r"idle_order.*pool_use_lifo"):
        sa.create_engine(url, poolclass=PgMarinaPool, pool_options={"idle_order": "lifo"})
    with pytest.raises(TypeError, match="pool_size"):
        sa.create_engine(url, poolclass=PgMarinaPool, pool_size="5")
    with pytest.raises(ValueError, match="sqlite"):
        sa.create_engine("sqlite://", poolclass=PgMarinaPool)
    with pytest.raises(TypeError, match="dialect"):
        PgMarinaPool(lambda: None)


@pytest.mark.parametrize("driver", DRIVERS)
def test_pool_timeout_zero_still_connects_and_refuses_only_a_full_pool(
    pg: Any, driver: str
) -> None:
    """As in QueuePool, pool_timeout bounds the wait for a connection to come
    back, not the connect a checkout needs."""
    with (
        _engine(pg, driver, pool_size=1, max_overflow=1, pool_timeout=0) as (engine, _),
        engine.connect() as a, engine.connect() as b,  # both connect
    ):
        assert _pid(a) != _pid(b)
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout):
            engine.connect()
        assert time.monotonic() - t0 < 1


def test_the_pool_timeout_is_both_pgmarinas_and_sqlalchemys_timeout_error(pg: Any) -> None:
    with _engine(pg, "psycopg", pool_size=1, max_overflow=0, pool_timeout=0.2) as (engine, _):
        with engine.connect():
            t0 = time.monotonic()
            with pytest.raises(PoolTimeout) as caught:
                engine.connect()
        assert 0.15 < time.monotonic() - t0 < 3
        assert isinstance(caught.value, exc.TimeoutError)
        assert isinstance(caught.value, pgmarina.PoolTimeout)
        _settled(engine.pool.pgmarina_pool)


# --------------------------------------------------------------------------------------------
# Core and ORM


@pytest.mark.parametrize("driver", DRIVERS)
def test_core_transactions_commit_and_roll_back(pg: Any, driver: str) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    with _engine(pg, driver) as (engine, _):
        with engine.begin() as conn:
            conn.execute(text(f"CREATE TABLE {table} (n int)"))
        try:
            with engine.begin() as conn:
                conn.execute(text(f"INSERT INTO {table} VALUES (1)"))
            with pytest.raises(ZeroDivisionError), engine.begin() as conn:
                conn.execute(text(f"INSERT INTO {table} VALUES (2)"))
                raise ZeroDivisionError
            with engine.connect() as conn:
                conn.execute(text(f"INSERT INTO {table} VALUES (3)"))
                # no commit: the connection's return rolls it back
            with engine.connect() as conn:
                assert conn.execute(text(f"SELECT n FROM {table}")).scalars().all() == [1]
        finally:
            with engine.begin() as conn:
                conn.execute(text(f"DROP TABLE {table}"))
        _settled(engine.pool.pgmarina_pool)


class _Base(DeclarativeBase):
    pass


class _Note(_Base):
    __tablename__ = "sqla_pgmarina_note"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]


@pytest.mark.parametrize("driver", DRIVERS)
def test_orm_sessions_commit_roll_back_and_query(pg: Any, driver: str) -> None:
    with _engine(pg, driver) as (engine, _):
        _Base.metadata.drop_all(engine)
        _Base.metadata.create_all(engine)
        try:
            with Session(engine) as session, session.begin():
                session.add_all([_Note(body="kept"), _Note(body="also kept")])
            with Session(engine) as session:
                session.add(_Note(body="rolled back"))
                session.flush()
                session.rollback()
            with Session(engine) as session:
                bodies = session.scalars(sa.select(_Note.body).order_by(_Note.id)).all()
            assert bodies == ["kept", "also kept"]
        finally:
            _Base.metadata.drop_all(engine)
        _settled(engine.pool.pgmarina_pool)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_connection_left_in_a_transaction_comes_back_rolled_back(pg: Any, driver: str) -> None:
    with _engine(pg, driver, pool_size=1, max_overflow=0) as (engine, _):
        resets = []
        event.listen(engine, "reset", lambda dbapi, rec, state: resets.append(state))
        raw = engine.raw_connection()
        cur = raw.cursor()
        cur.execute("SELECT txid_current()")
        cur.close()
        raw.close()  # the fairy's return: SQLAlchemy's rollback-on-return
        assert len(resets) == 1
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection is not None
            assert not conn.in_transaction() or conn.get_isolation_level()
            status = conn.exec_driver_sql("SELECT count(*) FROM pg_locks "
                                          "WHERE locktype = 'transactionid' "
                                          "AND pid = pg_backend_pid()").scalar_one()
            assert status == 0


# --------------------------------------------------------------------------------------------
# one record per physical connection, isolation levels, events


@pytest.mark.parametrize("driver", DRIVERS)
def test_one_record_and_one_connect_event_per_physical_connection(pg: Any, driver: str) -> None:
    with _engine(pg, driver, pool_size=1, max_overflow=2) as (engine, app):
        connects: list[Any] = []
        event.listen(engine, "connect", lambda dbapi, rec: connects.append(dbapi))
        seen: dict[int, Any] = {}
        for _ in range(4):
            with engine.connect() as a, engine.connect() as b:
                for conn in (a, b):
                    info = conn.connection.info
                    info.setdefault("pid", _pid(conn))
                    assert seen.setdefault(info["pid"], info) is info
        assert len(connects) == len(seen) == len(backend_pids(pg, app)) == 2
        assert engine.pool.checkedout() == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_each_engine_keeps_its_isolation_level_on_its_own_pool(pg: Any, driver: str) -> None:
    query = text("SELECT current_setting('transaction_isolation')")
    with _engine(pg, driver, isolation_level="SERIALIZABLE") as (strict, _), _engine(
        pg, driver, isolation_level="AUTOCOMMIT"
    ) as (loose, _), _engine(pg, driver) as (plain, _):
        for _ in range(3):
            with strict.connect() as s, loose.connect() as a, plain.connect() as p:
                assert s.execute(query).scalar_one() == "serializable"
                assert p.execute(query).scalar_one() == "read committed"
                # AUTOCOMMIT: no transaction stays open between statements
                a.execute(text("SELECT 1"))
                assert a.connection.dbapi_connection.autocommit
        assert strict.pool.pgmarina_pool is not plain.pool.pgmarina_pool
        # A per-connection isolation level is undone on return, as SQLAlchemy does it.
        with plain.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            assert conn.execute(query).scalar_one() == "repeatable read"
        with plain.connect() as conn:
            assert conn.execute(query).scalar_one() == "read committed"


@pytest.mark.parametrize("driver", DRIVERS)
def test_pool_events_fire_as_on_sqlalchemys_own_pools(pg: Any, driver: str) -> None:
    with _engine(pg, driver, pool_size=1, max_overflow=0) as (engine, _):
        seen: list[str] = []
        for name in ("connect", "checkout", "checkin", "reset", "invalidate", "close"):
            event.listen(engine, name, lambda *a, _n=name: seen.append(_n))
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert seen == ["connect", "checkout", "reset", "checkin"]
        seen.clear()
        with engine.connect() as conn:
            conn.invalidate()
        assert seen == ["checkout", "invalidate", "close", "checkin"]
        seen.clear()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert seen[:2] == ["connect", "checkout"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_do_connect_gets_the_record_its_connection_keeps_and_may_change_the_arguments(
    pg: Any, driver: str
) -> None:
    """The dialect's do_connect event sees the connection's record, as with
    QueuePool: what it puts in ``info`` is there at checkout, and the connect
    arguments it changes are the ones used."""
    with _engine(pg, driver, pool_size=2, max_overflow=0) as (engine, _):
        records: list[Any] = []

        @event.listens_for(engine, "do_connect")
        def do_connect(dialect: Any, rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
            assert rec is not None
            records.append(rec)
            rec.info["made"] = len(records)
            cparams["application_name"] = f"rec{len(records)}"

        with engine.connect() as a, engine.connect() as b:
            for conn, n in ((a, 1), (b, 2)):
                rec = conn.connection._connection_record
                assert rec is records[n - 1] and conn.connection.info["made"] == n
                name = conn.execute(text("SHOW application_name")).scalar_one()
                assert name == f"rec{n}"
        with engine.connect() as c:  # kept: no connect, the same record
            assert c.connection._connection_record in records and len(records) == 2


@pytest.mark.parametrize("driver", DRIVERS)
def test_connections_open_as_checkouts_need_them_and_pool_size_are_kept(
    pg: Any, driver: str
) -> None:
    """As in QueuePool: no connection opens ahead of a checkout; pool_size of
    them stay open after, those beyond go (pgmarina's max_idle)."""
    calls: list[int] = []
    driver_connect = importlib.import_module(driver).connect

    def connect() -> Any:
        calls.append(1)
        return driver_connect(pg.dsn)

    engine = sa.create_engine(
        _url(pg, driver), poolclass=PgMarinaPool, creator=connect, pool_size=2, max_overflow=2,
        pool_options={"max_idle": 0},
    )
    try:
        with engine.connect():
            pass
        time.sleep(0.1)  # room for a fill that must not come
        assert len(calls) == 1 and engine.pool.pgmarina_pool.stats().size == 1
        with engine.connect(), engine.connect(), engine.connect():
            assert len(calls) == 3
        stats = engine.pool.pgmarina_pool.stats()
        assert (stats.size, stats.idle) == (2, 2)  # pool_size kept, the overflow one closed
        assert engine.pool.checkedin() == 2 and engine.pool.overflow() == 0
    finally:
        engine.dispose()


def test_psycopg_hstore_works_on_every_connection_the_pool_opens(pg: Any) -> None:
    """psycopg's dialect registers hstore for connections made after its
    first-connect set-up; the pool opens none before that."""
    from sqlalchemy.dialects.postgresql import HSTORE

    with psycopg.connect(pg.dsn, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS hstore")
    query = sa.select(sa.cast(sa.bindparam("h", {"a": "1"}, type_=HSTORE), HSTORE))
    with (
        _engine(pg, "psycopg", pool_size=3, max_overflow=0) as (engine, _),
        engine.connect() as a, engine.connect() as b, engine.connect() as c,
    ):
        for conn in (a, b, c):
            assert conn.execute(query).scalar_one() == {"a": "1"}


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_record_reconnected_outside_a_checkout_gets_a_working_connection(
    pg: Any, driver: str
) -> None:
    """SQLAlchemy reconnects a checked-in record after the pool was invalidated
    (``get_connection()``, as its own tests do): it gets a connection of its
    own, outside pgmarina's count, and pgmarina's pool is left sound."""
    with _engine(pg, driver, pool_size=2, max_overflow=0) as (engine, _):
        a, b = engine.pool.connect(), engine.pool.connect()
        recs = [a._connection_record, b._connection_record]
        a.close()
        b.close()
        engine.pool._invalidate(None)  # what a disconnect error does
        for rec in recs:
            old = rec.dbapi_connection
            fresh = rec.get_connection()
            assert fresh is not old
            cur = fresh.cursor()
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
            cur.close()
            rec.close()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        _settled(engine.pool.pgmarina_pool)


# --------------------------------------------------------------------------------------------
# invalidation, restarts, dispose


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_invalidated_connection_is_dropped_by_pgmarina(pg: Any, driver: str) -> None:
    with _engine(pg, driver, pool_size=1, max_overflow=1) as (engine, app):
        inner = engine.pool.pgmarina_pool
        with engine.connect() as conn:
            old = _pid(conn)
            conn.invalidate()
        _settled(inner)
        assert _gone(pg, app, {old})
        with engine.connect() as conn:
            assert _pid(conn) != old
        assert inner.stats().size <= 2


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_soft_invalidated_connection_is_not_handed_out_again(pg: Any, driver: str) -> None:
    with _engine(pg, driver, pool_size=1, max_overflow=0) as (engine, app):
        with engine.connect() as conn:
            old = _pid(conn)
            conn.connection.invalidate(soft=True)
        assert _gone(pg, app, {old})
        with engine.connect() as conn:
            assert _pid(conn) != old


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_disconnect_invalidates_the_pool_and_pgmarinas_idle_connections(
    pg: Any, driver: str
) -> None:
    with _engine(
        pg, driver, pool_size=3, max_overflow=0, pool_options={"check_window": None}
    ) as (engine, app):
        inner = engine.pool.pgmarina_pool
        with engine.connect() as a, engine.connect() as b, engine.connect() as c:
            before = {_pid(a), _pid(b), _pid(c)}
            victim = _pid(a)
        with psycopg.connect(pg.dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (victim,))
        # Check out until one meets the dead backend: its disconnect error
        # invalidates the whole pool.
        for _ in range(3):
            try:
                with engine.connect() as conn:
                    _pid(conn)
            except exc.DBAPIError as e:
                assert e.connection_invalidated
                break
        else:
            raise AssertionError("no checkout met the terminated backend")
        # pgmarina closed its idle ones at once: no checkout had to find them stale.
        assert _gone(pg, app, before)
        with engine.connect() as conn:
            assert _pid(conn) not in before
        _settled(inner)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_checkout_event_disconnect_moves_the_record_to_a_fresh_connection(
    pg: Any, driver: str
) -> None:
    with _engine(pg, driver, pool_size=2, max_overflow=0) as (engine, app):
        inner = engine.pool.pgmarina_pool
        with engine.connect() as a, engine.connect() as b:
            pids = {_pid(a), _pid(b)}
        refuse = [True]

        @event.listens_for(engine, "checkout")
        def once(dbapi: Any, rec: Any, proxy: Any) -> None:
            if refuse and refuse.pop():
                raise exc.DisconnectionError("refused once by the test")

        with engine.connect() as conn:
            pid = _pid(conn)
            assert inner.stats().in_use == 1
        _settled(inner)
        live = backend_pids(pg, app)
        assert pid in live
        assert len(live) == inner.stats().size <= 2
        assert len(pids - live) == 1  # the refused connection was closed and dropped


@pytest.mark.slow
@pytest.mark.private_cluster
@pytest.mark.parametrize("driver", DRIVERS)
def test_pre_ping_rides_out_a_server_restart(private_pg: Any, driver: str) -> None:
    with _engine(
        private_pg, driver, pool_size=2, max_overflow=0, pool_pre_ping=True,
        pool_options={"check_window": None},
    ) as (engine, _):
        with engine.connect() as a, engine.connect() as b:
            before = {_pid(a), _pid(b)}
        private_pg.restart()
        for _ in range(4):
            with engine.connect() as conn:
                assert _pid(conn) not in before
        _settled(engine.pool.pgmarina_pool)


@pytest.mark.slow
@pytest.mark.private_cluster
@pytest.mark.parametrize("driver", DRIVERS)
def test_without_pre_ping_a_restart_costs_one_invalidated_statement(
    private_pg: Any, driver: str
) -> None:
    with _engine(
        private_pg, driver, pool_size=2, max_overflow=0, pool_options={"check_window": None}
    ) as (engine, _):
        with engine.connect() as a, engine.connect() as b:
            before = {_pid(a), _pid(b)}
        private_pg.restart()
        with pytest.raises(exc.DBAPIError) as caught, engine.connect() as conn:
            _pid(conn)
        assert caught.value.connection_invalidated
        for _ in range(4):
            with engine.connect() as conn:
                assert _pid(conn) not in before
        _settled(engine.pool.pgmarina_pool)


@pytest.mark.slow
@pytest.mark.private_cluster
@pytest.mark.parametrize("driver", DRIVERS)
def test_while_the_server_is_down_checkouts_fail_at_once_with_the_drivers_error(
    private_pg: Any, driver: str
) -> None:
    """As with QueuePool: a checkout whose connect fails raises at once (not
    after pool_timeout), through the engine's handle_error; once the server
    is back, checkouts connect again."""
    with _engine(
        private_pg, driver, pool_size=1, max_overflow=0, pool_timeout=20, pool_pre_ping=True
    ) as (engine, _):
        seen: list[BaseException] = []
        event.listen(engine, "handle_error", lambda ctx: seen.append(ctx.original_exception))
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        private_pg.stop()
        try:
            for _ in range(3):
                t0 = time.monotonic()
                with pytest.raises(exc.OperationalError):
                    engine.connect()
                assert time.monotonic() - t0 < 5, "waited instead of failing"
            assert seen and all(
                isinstance(e, engine.dialect.loaded_dbapi.Error) for e in seen
            ), seen
        finally:
            private_pg.start()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        _settled(engine.pool.pgmarina_pool)


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_engine_dropped_undisposed_closes_its_connections_quietly(
    pg: Any, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As with QueuePool: nothing is left open, and nothing warns (an engine
    never disposed is ordinary SQLAlchemy); the notice is at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="pgmarina")
    app = f"sqla_{uuid.uuid4().hex[:10]}"
    engine = _new_engine(pg, driver, app, pool_size=2)
    with engine.connect() as a, engine.connect() as b:
        a.execute(text("SELECT 1"))
        b.execute(text("SELECT 1"))
    name = engine.pool.pgmarina_pool.name
    pids = backend_pids(pg, app)
    assert len(pids) == 2
    del engine, a, b
    gc.collect()
    assert _gone(pg, app, pids, timeout=10), "the dropped engine's connections stayed open"
    told = [r for r in caplog.records if "never closed" in r.getMessage()
            and r.getMessage().startswith(name + " ")]
    assert told and all(r.levelno == logging.DEBUG for r in told), told


@pytest.mark.parametrize("driver", DRIVERS)
def test_dispose_closes_idle_connections_now_and_leased_ones_on_return(
    pg: Any, driver: str
) -> None:
    with _engine(pg, driver, pool_size=1, max_overflow=1) as (engine, app):
        old_pool = engine.pool
        held = engine.connect()
        kept = _pid(held)
        with engine.connect() as conn:
            idle = _pid(conn)
        engine.dispose()
        assert _gone(pg, app, {idle})
        assert kept in backend_pids(pg, app)
        assert _pid(held) == kept  # still usable
        held.close()
        assert _gone(pg, app, {kept})
        assert type(engine.pool) is PgMarinaPool and engine.pool is not old_pool
        assert engine.pool.size() == old_pool.size()
        with engine.connect() as conn:
            assert _pid(conn) not in (kept, idle)
        # QueuePool stays usable after its own dispose(); so does this one.
        pool = engine.pool
        pool.dispose()
        with engine.connect() as conn:
            _pid(conn)
        assert pool.pgmarina_pool.stats().size >= 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_many_threads_share_the_engine_and_nothing_leaks(pg: Any, driver: str) -> None:
    with _engine(pg, driver, pool_size=2, max_overflow=2, pool_timeout=20) as (engine, app):
        inner = engine.pool.pgmarina_pool
        holders: dict[int, set[int]] = {}
        lock = threading.Lock()

        def work(n: int) -> None:
            for i in range(30):
                with engine.connect() as conn:
                    pid = _pid(conn)
                    with lock:
                        # one connection is never held by two threads at once
                        assert not any(
                            pid in pids for t, pids in holders.items() if t != n
                        )
                        holders.setdefault(n, set()).add(pid)
                    if i % 7 == 0:
                        conn.invalidate()
                    with lock:
                        holders[n].discard(pid)

        _on_threads(work, 12)
        _settled(inner)
        s = inner.stats()
        assert s.in_use == 0 and s.size <= 4
        assert engine.pool.checkedout() == 0
        assert len(backend_pids(pg, app)) == s.size


def test_a_lease_info_dict_stays_with_its_connection(pg: Any) -> None:
    with pgmarina.Pool(pg.dsn, driver="psycopg", min_size=1, max_size=1) as pool:
        with pool.connection() as conn:
            first = pgmarina._lease.info(conn)
            first["mark"] = conn.info.backend_pid
        with pool.connection() as conn:
            assert pgmarina._lease.info(conn) is first
            assert first["mark"] == conn.info.backend_pid  # psycopg's own .info untouched
            leased = conn
        with pytest.raises(pgmarina.ConnectionReleasedError):
            pgmarina._lease.info(leased)
        with pytest.raises(TypeError, match="leased"):
            pgmarina._lease.info(object())
        pool.expire()
        with pool.connection() as conn:
            assert pgmarina._lease.info(conn) == {}


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_detached_connection_leaves_the_pool_open_and_its_user_keeps_it(
    pg: Any, driver: str
) -> None:
    with _engine(pg, driver, pool_size=1, max_overflow=0) as (engine, app):
        inner = engine.pool.pgmarina_pool
        with engine.connect() as conn:
            mine = _pid(conn)
            conn.detach()
            assert inner.stats().in_use == 0
            with engine.connect() as other:  # a replacement, though max_size is 1
                assert _pid(other) != mine
            assert _pid(conn) == mine  # pgmarina left the detached one alone
        # Closing a detached connection closes it (SQLAlchemy's doing), not pgmarina's pool.
        assert _gone(pg, app, {mine})
        _settled(inner)
        assert inner.stats().size == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_rejected_connect_raises_sqlalchemys_operational_error_at_once(
    pg: Any, driver: str
) -> None:
    url = _url(pg, driver).set(database=f"no_such_db_{uuid.uuid4().hex[:6]}")
    engine = sa.create_engine(url, poolclass=PgMarinaPool, pool_timeout=20)
    seen: list[BaseException] = []
    sa.event.listen(engine, "handle_error", lambda ctx: seen.append(ctx.original_exception))
    try:
        t0 = time.monotonic()
        with pytest.raises(exc.OperationalError, match="does not exist") as caught:
            engine.connect()
        assert time.monotonic() - t0 < 10  # the pool fails fast: no wait for pool_timeout
        # As with SQLAlchemy's own pools: the driver's error, wrapped by the
        # engine, which showed it to its handle_error event first.
        driver_error = caught.value.__cause__
        assert isinstance(driver_error, engine.dialect.loaded_dbapi.Error)
        assert seen == [driver_error]
        assert isinstance(driver_error.__context__, pgmarina.PoolConnectError)
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_checkout_waiting_through_a_dispose_gets_a_connection_from_the_new_pool(
    pg: Any, driver: str
) -> None:
    with _engine(pg, driver, pool_size=1, max_overflow=0, pool_timeout=10) as (engine, _):
        pool = engine.pool
        got: list[Any] = []
        held = pool.connect()
        waiter = threading.Thread(target=lambda: got.append(pool.connect()))
        waiter.start()
        deadline = time.monotonic() + 5
        while pool.pgmarina_pool.stats().waiting == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        old = pool.pgmarina_pool
        pool.dispose()  # SQLAlchemy's pool dispose: the pool itself goes on
        waiter.join(10)
        assert got and got[0].is_valid
        assert pool.pgmarina_pool is not old
        got[0].close()
        held.close()
        _settled(pool.pgmarina_pool)
        assert old.closed and old.stats().size == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_dispose_without_close_in_a_forked_child_leaves_the_old_connections_alone(
    pg: Any, driver: str
) -> None:
    """``engine.dispose(close=False)`` is what SQLAlchemy has a forked child call: the old
    pool's connections belong to the parent, so nothing may close them.  (The child is
    simulated: the pool is told it was opened by another process.)"""
    with _engine(pg, driver, pool_size=2, max_overflow=0) as (engine, app):
        with engine.connect() as a, engine.connect() as b:
            before = {_pid(a), _pid(b)}
        old = engine.pool.pgmarina_pool
        conns = [e.conn for e in old._core.entries if e.conn is not None]
        engine.pool._opened_in = -1  # as in a child: opened by the parent
        engine.dispose(close=False)
        old.close()  # as the forgotten pool's finalizer would: neither may reach them
        assert before <= backend_pids(pg, app)
        with engine.connect() as conn:
            assert _pid(conn) not in before
        for raw in conns:
            raw.close()  # the test's own cleanup, in place of the garbage collector
        assert _gone(pg, app, before)


@pytest.mark.parametrize("driver", DRIVERS)
def test_dispose_without_close_in_the_same_process_closes_the_old_pool(
    pg: Any, driver: str
) -> None:
    """In the process that opened it, a pool recreated without dispose() (close=False, or
    two engine.dispose() racing) is disposed: its connections do not wait for the GC."""
    with _engine(pg, driver, pool_size=2, max_overflow=0) as (engine, app):
        with engine.connect() as a, engine.connect() as b:
            before = {_pid(a), _pid(b)}
        old = engine.pool.pgmarina_pool
        engine.dispose(close=False)
        assert old.closed
        assert _gone(pg, app, before)


@pytest.mark.slow
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_random_mix_of_checkouts_invalidations_detaches_and_disposes_leaks_nothing(
    pg: Any, driver: str
) -> None:
    """Threads check out, invalidate (hard and soft), detach, time out and dispose at random;
    afterwards every backend of the engine is one the pool holds, and nothing is leased."""
    import random

    with _engine(pg, driver, pool_size=2, max_overflow=2, pool_timeout=0.5) as (engine, app):
        stop = time.monotonic() + 2.0

        def work(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop:
                roll = rng.random()
                try:
                    with engine.connect() as conn:
                        _pid(conn)
                        if roll < 0.1:
                            conn.invalidate()
                        elif roll < 0.15:
                            conn.connection.invalidate(soft=True)
                        elif roll < 0.2:
                            conn.detach()  # closed when the block ends
                        elif roll < 0.25:
                            engine.pool.dispose()
                        elif roll < 0.3:
                            conn.commit()
                except PoolTimeout:
                    pass

        _on_threads(work, 8)
        inner = engine.pool.pgmarina_pool
        _settled(inner)
        assert engine.pool.checkedout() == 0
        deadline = time.monotonic() + 5
        while len(backend_pids(pg, app)) != inner.stats().size:
            assert time.monotonic() < deadline, (backend_pids(pg, app), inner.stats())
            time.sleep(0.05)


@pytest.mark.parametrize("driver", DRIVERS)
def test_no_password_in_the_pools_status_repr_or_errors(
    pg: Any, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-Pw-" + uuid.uuid4().hex[:6]
    url = _url(pg, driver).set(password=secret)  # the test server trusts: it is not checked
    engine = sa.create_engine(
        url, poolclass=PgMarinaPool, pool_size=1, max_overflow=0, pool_timeout=0.1,
        echo_pool="debug",
    )
    texts = [engine.pool.status(), repr(engine.pool.pgmarina_pool)]
    try:
        with caplog.at_level("DEBUG"), engine.connect() as conn:
            _pid(conn)
            texts += [engine.pool.status(), repr(engine.pool.pgmarina_pool)]
            with pytest.raises(PoolTimeout) as caught:
                engine.connect()
            texts.append(str(caught.value))
        bad = sa.create_engine(
            url.set(database="no_such_db_" + uuid.uuid4().hex[:6]), poolclass=PgMarinaPool
        )
        with caplog.at_level("DEBUG"), pytest.raises(exc.DBAPIError) as failed:
            bad.connect()
        texts += [str(failed.value), str(failed.value.__cause__)]
        bad.dispose()
    finally:
        engine.dispose()
    texts.append(caplog.text)
    assert all(secret not in t for t in texts)
    assert "127.0.0.1" in texts[2] or "localhost" in texts[2]
