"""The psycopg_pool façade's surface: signatures, defaults, arguments, errors, open and close.

psycopg_pool 3.3 is installed in the dev environment, so the signatures are compared with
the real thing rather than with a copy of it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import psycopg
import psycopg_pool as peer
import pytest
from packaging.version import Version
from psycopg_pool_harness import Side, each_side, sides

import pgmarina
from pgmarina.compat import psycopg_pool as facade

PAIRS = [
    (facade.ConnectionPool, peer.ConnectionPool),
    (facade.AsyncConnectionPool, peer.AsyncConnectionPool),
    (facade.NullConnectionPool, peer.NullConnectionPool),
    (facade.AsyncNullConnectionPool, peer.AsyncNullConnectionPool),
]
PAIR_IDS = [ours.__name__ for ours, _ in PAIRS]

METHODS = [
    "connection", "getconn", "putconn", "open", "close", "wait", "resize", "check",
    "check_connection", "get_stats", "pop_stats", "drain", "__enter__", "__exit__",
    "__aenter__", "__aexit__",
]  # fmt: skip


def _shape(fn: Any) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults of a signature (annotations differ in spelling)."""
    params = inspect.signature(fn).parameters.values()
    return [(p.name, p.kind, repr(p.default)) for p in params]


# ---------------------------------------------------------------------------------------------
# the surface


def test_the_module_exports_psycopg_pools_names() -> None:
    assert set(peer.__all__) <= set(facade.__all__)
    for name in peer.__all__:
        assert hasattr(facade, name), name


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=PAIR_IDS)
def test_the_constructors_take_psycopg_pool_33s_parameters_with_its_defaults(
    ours: type, theirs: type
) -> None:
    assert _shape(ours.__init__) == _shape(theirs.__init__)


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("method", METHODS)
def test_the_methods_take_psycopg_pools_parameters(ours: type, theirs: type, method: str) -> None:
    if not hasattr(theirs, method):
        assert not hasattr(ours, method), f"{ours.__name__}.{method} is not psycopg_pool's"
        return
    assert _shape(getattr(ours, method)) == _shape(getattr(theirs, method))
    assert inspect.iscoroutinefunction(getattr(ours, method)) == inspect.iscoroutinefunction(
        getattr(theirs, method)
    ), f"{method}: async in one and not the other"


def test_the_null_pools_are_subclasses_of_the_pools_as_in_psycopg_pool() -> None:
    assert issubclass(facade.NullConnectionPool, facade.ConnectionPool)
    assert issubclass(facade.AsyncNullConnectionPool, facade.AsyncConnectionPool)


def test_the_pools_are_generic_in_their_connection_class() -> None:
    class MyConn(psycopg.Connection[Any]):
        pass

    assert facade.ConnectionPool[MyConn] is not None
    assert facade.AsyncNullConnectionPool[psycopg.AsyncConnection[Any]] is not None


def test_the_errors_are_operational_errors_as_in_psycopg_pool_and_pgmarina_errors_too() -> None:
    pairs = [
        (facade.PoolTimeout, pgmarina.PoolTimeout),
        (facade.PoolClosed, pgmarina.PoolClosed),
        (facade.TooManyRequests, pgmarina.TooManyWaiters),
    ]
    for cls, native in pairs:
        assert issubclass(cls, psycopg.OperationalError)
        assert issubclass(cls, native)
        assert issubclass(cls, pgmarina.PoolError)
        assert str(cls("why")) == "why"


def test_version_compares_as_psycopg_pool_33() -> None:
    version = Version(facade.__version__)
    assert version.release[:2] == (3, 3)
    assert version >= Version("3.3")
    assert pgmarina.__version__ in facade.__version__


# ---------------------------------------------------------------------------------------------
# arguments


@sides
@pytest.mark.parametrize("null", [False, True], ids=["pool", "null"])
def test_the_defaults_are_psycopg_pools(kind: str, null: bool) -> None:
    async def body() -> None:
        pool = Side(kind).cls(null)("", open=False)
        assert (pool.min_size, pool.max_size) == ((0, 0) if null else (4, 4))
        assert pool.timeout == 30
        assert pool.max_waiting == 0
        assert pool.max_lifetime == 3600
        assert pool.max_idle == 600
        assert pool.reconnect_timeout == 300
        assert pool.num_workers == 3
        assert pool.close_returns is False
        assert pool.closed  # not open yet
        assert pool.name.startswith("pool-")
        assert pool.conninfo == "" and pool.kwargs is None
        assert pool.connection_class is Side(kind).connection_class

    asyncio.run(body())


@sides
def test_max_size_none_is_min_size_and_names_are_kept(kind: str) -> None:
    async def body() -> None:
        cls = Side(kind).cls()
        pool = cls("", min_size=2, open=False, name="orders")
        assert (pool.min_size, pool.max_size, pool.name) == (2, 2, "orders")
        pool = cls("", min_size=0, max_size=2, open=False)
        assert (pool.min_size, pool.max_size) == (0, 2)
        assert "orders" not in repr(pool) and pool.name in repr(pool)

    asyncio.run(body())


BAD_SIZES = [(0, 0), (0, None), (-1, None), (4, 2)]
NULL_BAD_SIZES = [(1, None), (-1, None), (0, -2)]


@sides
@pytest.mark.parametrize(("min_size", "max_size"), BAD_SIZES)
def test_bad_sizes_raise_value_error(kind: str, min_size: int, max_size: int | None) -> None:
    with pytest.raises(ValueError, match="_size"):
        Side(kind).cls()("", min_size=min_size, max_size=max_size, open=False)


@sides
@pytest.mark.parametrize(("min_size", "max_size"), NULL_BAD_SIZES)
def test_bad_null_pool_sizes_raise_value_error(
    kind: str, min_size: int, max_size: int | None
) -> None:
    with pytest.raises(ValueError, match="_size"):
        Side(kind).cls(null=True)("", min_size=min_size, max_size=max_size, open=False)


WRONG_ARGUMENTS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"min_size": "4"}, TypeError, "min_size"),
    ({"max_size": 2.5}, TypeError, "max_size"),
    ({"num_workers": 0}, ValueError, "num_workers"),
    ({"num_workers": "3"}, TypeError, "num_workers"),
    ({"timeout": -1}, ValueError, "timeout"),
    ({"timeout": "30"}, TypeError, "timeout"),
    ({"max_waiting": -1}, ValueError, "max_waiting"),
    ({"max_lifetime": float("nan")}, ValueError, "max_lifetime"),
    ({"reconnect_timeout": -1}, ValueError, "reconnect_timeout"),
    ({"configure": "SELECT 1"}, TypeError, "configure"),
    ({"check": 1}, TypeError, "check"),
    ({"reset": object()}, TypeError, "reset"),
    ({"reconnect_failed": "exit"}, TypeError, "reconnect_failed"),
    ({"connection_class": int}, TypeError, "connection_class"),
    ({"kwargs": [("autocommit", True)]}, TypeError, "kwargs"),
    ({"kwargs": {"no_such_libpq_option": 1}}, TypeError, "kwargs"),
    ({"close_returns": "yes"}, TypeError, "close_returns"),
    ({"open": "no"}, TypeError, "open"),
    ({"name": 7}, TypeError, "name"),
]


@sides
@pytest.mark.parametrize(("given", "error", "named"), WRONG_ARGUMENTS,
                         ids=[next(iter(g)) + "-" + e.__name__ for g, e, _ in WRONG_ARGUMENTS])
def test_a_wrong_argument_is_refused_naming_it(
    kind: str, given: dict[str, Any], error: type[Exception], named: str
) -> None:
    given = {"open": False, **given}
    with pytest.raises(error, match=named):
        Side(kind).cls()("", **given)


@sides
def test_a_bad_conninfo_is_refused_at_once_without_its_password(kind: str) -> None:
    with pytest.raises(ValueError, match="conninfo") as info:
        Side(kind).cls()("host=x password=hunter2 = broken", open=False)
    assert "hunter2" not in str(info.value)


@sides
def test_callable_conninfo_and_kwargs_are_not_checked_up_front(kind: str) -> None:
    Side(kind).cls()(lambda: "not a conninfo", kwargs=lambda: {"x": 1}, open=False)


# ---------------------------------------------------------------------------------------------
# opening and closing


@each_side
async def test_a_pool_not_open_refuses_requests_until_opened(side: Side, pg: Any) -> None:
    pool = side.make(pg.dsn, min_size=1)
    assert pool.closed
    with pytest.raises(facade.PoolClosed, match="is not open yet"):
        await side.getconn(pool)
    with pytest.raises(facade.PoolClosed, match="is not open yet"):
        async with side.connection(pool):
            pass
    await side.call(pool.open)
    assert not pool.closed
    async with side.connection(pool) as conn:
        assert await conn.value("SELECT 1") == 1
    await side.call(pool.close)
    assert pool.closed
    with pytest.raises(facade.PoolClosed, match="is already closed"):
        await side.getconn(pool)


@each_side
async def test_a_closed_pool_cannot_be_reopened(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, min_size=1)
    await side.call(pool.close)
    with pytest.raises(psycopg.OperationalError, match="cannot be reopened"):
        await side.call(pool.open)
    with pytest.raises(facade.PoolClosed):
        await side.call(pool.wait, 1)


@each_side
async def test_open_twice_and_close_twice_are_harmless(side: Side, pg: Any) -> None:
    pool = await side.opened(pg.dsn, min_size=1)
    await side.call(pool.open)
    async with side.connection(pool) as conn:
        assert await conn.value("SELECT 2") == 2
    await side.call(pool.close)
    await side.call(pool.close)
    assert pool.closed


@each_side
async def test_closing_a_pool_never_opened_still_lets_it_open(side: Side, pg: Any) -> None:
    """As in psycopg_pool: close() of a pool not yet open does nothing."""
    pool = side.make(pg.dsn, min_size=1)
    await side.call(pool.close)
    await side.call(pool.open, wait=True, timeout=10)
    async with side.connection(pool) as conn:
        assert await conn.value("SELECT 3") == 3


@each_side
async def test_the_pool_context_opens_and_closes_without_waiting_for_the_fill(
    side: Side, pg: Any
) -> None:
    pool = side.make(pg.dsn, min_size=2)
    async with side.entered(pool) as entered:
        assert entered is pool
        assert not pool.closed
        async with side.connection(pool) as conn:
            assert await conn.value("SELECT 4") == 4
    assert pool.closed
    assert pool.get_stats()["pool_size"] == 0


@each_side
async def test_open_wait_fills_the_pool(side: Side, pg: Any) -> None:
    pool = side.make(pg.dsn, min_size=3)
    await side.call(pool.open, wait=True, timeout=10)
    stats = pool.get_stats()
    assert stats["pool_size"] == stats["pool_available"] == 3
    await side.call(pool.wait, 0.0001)  # already full: returns at once


def _dead_dsn() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://nobody@127.0.0.1:{port}/nothing"


@each_side
async def test_wait_that_times_out_closes_the_pool_and_raises_pool_timeout(side: Side) -> None:
    pool = side.make(_dead_dsn(), min_size=1)
    await side.call(pool.open)
    start = time.monotonic()
    with pytest.raises(facade.PoolTimeout, match="initialization incomplete"):
        await side.call(pool.wait, 0.5)
    assert 0.4 < time.monotonic() - start < 3
    assert pool.closed
    with pytest.raises(facade.PoolClosed):
        await side.getconn(pool)


@each_side
async def test_open_wait_that_fails_closes_the_pool(side: Side) -> None:
    pool = side.make(_dead_dsn(), min_size=1)
    with pytest.raises(facade.PoolTimeout):
        await side.call(pool.open, wait=True, timeout=0.3)
    assert pool.closed


# ---------------------------------------------------------------------------------------------
# the warnings psycopg_pool gives for opening in the constructor


def test_a_sync_pool_opened_by_default_warns_at_first_use(pg: Any) -> None:
    pool = facade.ConnectionPool(pg.dsn, min_size=1)  # open not given: opens, no warning yet
    try:
        with pytest.warns(DeprecationWarning, match="open"), pool.connection() as conn:
            conn.execute("SELECT 1")
        with pool.connection():  # once only
            pass
    finally:
        pool.close()


def test_a_sync_pool_opened_by_default_warns_even_after_an_explicit_open(pg: Any) -> None:
    pool = facade.ConnectionPool(pg.dsn, min_size=1)
    try:
        pool.open()
        with pytest.warns(DeprecationWarning):
            pool.getconn()
    finally:
        pool.close()


def test_a_sync_pool_opened_on_purpose_does_not_warn(pg: Any) -> None:
    pool = facade.ConnectionPool(pg.dsn, min_size=1, open=True)
    try:
        with pool.connection():
            pass
    finally:
        pool.close()
    with facade.ConnectionPool(pg.dsn, min_size=1) as pool, pool.connection():  # a context
        pass


def test_an_async_pool_cannot_open_in_its_constructor_without_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        facade.AsyncConnectionPool("")
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError):
        facade.AsyncConnectionPool("", open=True)


def test_an_async_pool_opened_in_its_constructor_warns(pg: Any) -> None:
    async def body() -> None:
        with pytest.warns(RuntimeWarning, match="constructor"):
            pool = facade.AsyncConnectionPool(pg.dsn, min_size=1, open=True)
        try:
            async with pool.connection():  # warned already: not again
                pass
        finally:
            await pool.close()
        pool = facade.AsyncConnectionPool(pg.dsn, min_size=1)  # open not given
        try:
            with pytest.warns(RuntimeWarning, match="constructor"):
                async with pool.connection():
                    pass
        finally:
            await pool.close()
        async with (
            facade.AsyncConnectionPool(pg.dsn, min_size=1) as pool,
            pool.connection(),  # a context: no warning
        ):
            pass

    asyncio.run(body())
