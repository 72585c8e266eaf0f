"""``pgmarina.compat.queries``: queries 2.1's ``queries.pool`` API, tested from
its documentation, on real psycopg2 connections."""

from __future__ import annotations

import gc
import select
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from pgmarina import PoolError
from pgmarina.compat import queries
from pgmarina.compat.queries import (
    ActivePoolError,
    Connection,
    ConnectionBusyError,
    ConnectionNotFoundError,
    NoIdleConnectionsError,
    Pool,
    PoolFullError,
    PoolManager,
)


class Session:
    """Stands in for ``queries.Session``: any object a weak reference can hold."""


@pytest.fixture
def connect(pg: Any) -> Iterator[Any]:
    made: list[Any] = []

    def make() -> Any:
        conn = psycopg2.connect(pg.dsn)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        if not conn.closed:
            conn.close()


@pytest.fixture(autouse=True)
def clean_manager() -> Iterator[None]:
    yield
    PoolManager.set_max_total(None)
    for pid in list(PoolManager._pools):
        PoolManager._pools[pid].shutdown()
        del PoolManager._pools[pid]


def _executing(pg: Any) -> tuple[Any, Any]:
    """An asynchronous psycopg2 connection busy with ``pg_sleep``, and its cursor."""
    conn = psycopg2.connect(pg.dsn, async_=True)
    _wait(conn)
    cur = conn.cursor()  # psycopg2 needs it alive until the query ends
    cur.execute("SELECT pg_sleep(0.5)")
    return conn, cur


def _wait(conn: Any) -> None:
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], 5)
        else:
            select.select([], [conn.fileno()], [], 5)


# -- PoolManager ------------------------------------------------------------------------------


def test_pool_manager_is_one_instance() -> None:
    assert PoolManager.instance() is PoolManager.instance()
    assert isinstance(PoolManager.instance(), PoolManager)


def test_create_makes_a_pool_and_creating_it_twice_raises_key_error() -> None:
    PoolManager.create("p1", idle_ttl=5, max_size=2)
    with pytest.raises(KeyError, match="p1"):
        PoolManager.create("p1")
    assert PoolManager.size("p1") == 0
    assert not PoolManager.is_full("p1")


def test_every_method_on_an_unknown_pool_raises_key_error() -> None:
    with pytest.raises(KeyError, match="nope"):
        PoolManager.get("nope", Session())
    with pytest.raises(KeyError):
        PoolManager.size("nope")


def test_add_up_to_max_size_then_the_pool_is_full(connect: Any) -> None:
    PoolManager.create("p", max_size=2)
    a, b, c = connect(), connect(), connect()
    PoolManager.add("p", a)
    PoolManager.add("p", b)
    assert PoolManager.is_full("p") and PoolManager.size("p") == 2
    assert PoolManager.has_connection("p", a) and not PoolManager.has_connection("p", c)
    with pytest.raises(PoolFullError, match="full"):
        PoolManager.add("p", c)


def test_get_locks_an_idle_connection_and_free_gives_it_back(connect: Any) -> None:
    PoolManager.create("p")
    handle = connect()
    PoolManager.add("p", handle)
    session = Session()
    assert PoolManager.has_idle_connection("p")
    assert PoolManager.get("p", session) is handle
    assert not PoolManager.has_idle_connection("p")
    with pytest.raises(NoIdleConnectionsError, match="no idle connection"):
        PoolManager.get("p", Session())  # get never waits
    PoolManager.free("p", handle)
    assert PoolManager.has_idle_connection("p")
    assert PoolManager.get("p", Session()) is handle


def test_a_lock_dies_with_its_session(connect: Any) -> None:
    PoolManager.create("p")
    handle = connect()
    PoolManager.add("p", handle)
    session: Session | None = Session()
    PoolManager.get("p", session)
    assert not PoolManager.has_idle_connection("p")
    session = None
    gc.collect()
    assert PoolManager.has_idle_connection("p")
    assert PoolManager.get("p", Session()) is handle


def test_lock_takes_a_given_connection_and_refuses_a_busy_one(connect: Any) -> None:
    PoolManager.create("p", max_size=2)
    handle = connect()
    PoolManager.add("p", handle)
    s1 = Session()
    PoolManager.lock("p", handle, s1)
    with pytest.raises(ConnectionBusyError, match="busy"):
        PoolManager.lock("p", handle, Session())


def test_remove_connection_closes_it_and_refuses_unknown_or_busy_ones(connect: Any) -> None:
    PoolManager.create("p", max_size=2)
    a, b = connect(), connect()
    PoolManager.add("p", a)
    PoolManager.add("p", b)
    with pytest.raises(ConnectionNotFoundError, match="not in pool p"):
        PoolManager.remove_connection("p", connect())
    session = Session()
    PoolManager.lock("p", b, session)
    with pytest.raises(ConnectionBusyError):
        PoolManager.remove_connection("p", b)
    PoolManager.remove_connection("p", a)
    assert a.closed and PoolManager.size("p") == 1


def test_remove_refuses_a_pool_in_use_and_closes_an_unused_one(connect: Any) -> None:
    PoolManager.create("p", max_size=2)
    a = connect()
    PoolManager.add("p", a)
    session = Session()
    PoolManager.get("p", session)
    with pytest.raises(ActivePoolError, match="in use"):
        PoolManager.remove("p")
    PoolManager.free("p", a)
    PoolManager.remove("p")
    assert a.closed
    with pytest.raises(KeyError):
        PoolManager.size("p")


def test_clean_drops_closed_connections_and_removes_a_pool_idle_past_its_ttl(
    connect: Any,
) -> None:
    PoolManager.create("p", idle_ttl=0.2, max_size=2)
    a, b = connect(), connect()
    PoolManager.add("p", a)
    PoolManager.add("p", b)
    a.close()
    PoolManager.clean("p")
    assert PoolManager.size("p") == 1
    time.sleep(0.3)
    PoolManager.clean("p")
    assert b.closed
    with pytest.raises(KeyError):
        PoolManager.size("p")


def test_set_idle_ttl_and_set_max_size_change_the_pool(connect: Any) -> None:
    PoolManager.create("p")
    PoolManager.add("p", connect())
    assert PoolManager.is_full("p")
    PoolManager.set_max_size("p", 2)
    assert not PoolManager.is_full("p")
    PoolManager.set_idle_ttl("p", 0)
    time.sleep(0.01)
    PoolManager.clean("p")
    with pytest.raises(KeyError):
        PoolManager.size("p")


def test_shutdown_closes_every_connection_of_every_pool_locked_or_not(connect: Any) -> None:
    PoolManager.create("p1")
    PoolManager.create("p2")
    a, b = connect(), connect()
    PoolManager.add("p1", a)
    PoolManager.add("p2", b)
    session = Session()
    PoolManager.get("p1", session)
    PoolManager.shutdown()
    assert a.closed and b.closed
    assert PoolManager._pools == {}


def test_max_total_caps_the_connections_of_all_pools_together(connect: Any) -> None:
    PoolManager.set_max_total(2)
    PoolManager.create("p1", max_size=5)
    PoolManager.create("p2", max_size=5)
    a = connect()
    PoolManager.add("p1", a)
    PoolManager.add("p2", connect())
    with pytest.raises(PoolFullError, match="max_total=2"):
        PoolManager.add("p1", connect())
    PoolManager.remove_connection("p1", a)
    PoolManager.add("p2", connect())  # the permit a held is free again


def test_pool_ids_from_uris_never_hold_the_password() -> None:
    pid = queries.pool_id("postgresql://u:hunter2@h/db")
    assert "hunter2" not in pid
    assert pid == queries.pool_id("postgresql://u:hunter2@h/db")
    assert pid != queries.pool_id("postgresql://u:hunter2@h/other")


def test_errors_are_pgmarina_errors() -> None:
    for cls in (
        ActivePoolError, ConnectionBusyError, ConnectionNotFoundError, NoIdleConnectionsError,
        PoolFullError,
    ):
        assert issubclass(cls, PoolError)


# -- Pool and Connection -------------------------------------------------------------------


def test_pool_attributes_follow_the_documentation(connect: Any) -> None:
    pool = Pool("pid", idle_ttl=30, max_size=2)
    assert pool.id == "pid"
    assert pool.idle_connections == [] and not pool.is_full
    a = connect()
    pool.add(a)
    assert pool.idle_connections == [a]
    with pytest.raises(ValueError, match="already in pool"):
        pool.add(a)
    time.sleep(0.05)
    assert pool.idle_duration >= 0.04
    session = Session()
    assert pool.get(session) is a
    assert pool.idle_duration == 0
    pool.free(a)
    with pytest.raises(ConnectionNotFoundError):
        pool.free(connect())
    pool.remove(a)
    assert a.closed and len(pool) == 0


def test_pool_close_closes_idle_ones_and_reports_busy_ones(connect: Any) -> None:
    pool = Pool("pid", max_size=2)
    a, b = connect(), connect()
    pool.add(a)
    pool.add(b)
    session = Session()
    pool.lock(b, session)
    with pytest.raises(ConnectionBusyError):
        pool.close()
    assert a.closed and not b.closed and len(pool) == 1


def test_pool_settings_are_checked_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="max_size"):
        Pool("p", max_size=0)
    with pytest.raises(TypeError, match="idle_ttl"):
        Pool("p", idle_ttl="60")  # type: ignore[arg-type]


def test_connection_states_follow_the_documentation(pg: Any, connect: Any) -> None:
    handle = connect()
    conn = Connection(handle)
    assert conn.id == id(handle)
    assert not conn.busy and not conn.locked and not conn.executing and not conn.closed
    session = Session()
    conn.lock(session)
    assert conn.locked and conn.busy
    with pytest.raises(ConnectionBusyError):
        conn.lock(Session())
    with pytest.raises(ConnectionBusyError):
        conn.close()
    conn.free()
    assert not conn.busy
    conn.close()
    assert conn.closed and handle.closed


def test_an_executing_connection_is_busy_and_cannot_be_freed_or_shut_down(pg: Any) -> None:
    handle, _cursor = _executing(pg)
    try:
        conn = Connection(handle)
        assert conn.executing and conn.busy
        with pytest.raises(ConnectionBusyError):
            conn.free()
        pool = Pool("p")
        pool.add(handle)
        with pytest.raises(ConnectionBusyError):
            pool.shutdown()
        assert len(pool) == 1
        _wait(handle)
        assert not conn.executing
        pool.shutdown()
        assert handle.closed
    finally:
        if not handle.closed:
            handle.close()
