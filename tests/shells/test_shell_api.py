"""Both shells: argument validation, open/close life cycle, lease misuse."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import pytest
from fakes import FakeAsyncAdapter, FakeAsyncConnection, FakeSyncAdapter, FakeSyncConnection
from harness import QUIET, Harness, both, eventually, make_fake, pool_class, run

from pgmarina import (
    AsyncPool,
    ConnectionReleasedError,
    DriverNotInstalled,
    Lease,
    Pool,
    PoolClosed,
    PoolNotOpen,
    unwrap,
)

# ---------------------------------------------------------------------------
# constructor arguments

WRONG_TYPE: list[tuple[str, Any]] = [
    ("dsn", 5),
    ("min_size", "1"),
    ("min_size", 1.5),
    ("min_size", True),
    ("max_size", "4"),
    ("timeout", "1"),
    ("max_waiting", "1"),
    ("max_waiting", None),
    ("max_lifetime", "1"),
    ("max_idle", "1"),
    ("max_uses", 1.5),
    ("check_window", "1"),
    ("keepalive", "1"),
    ("max_connecting", "2"),
    ("reconnect_timeout", None),
    ("fail_fast_after", "1"),
    ("housekeeping_interval", "1"),
    ("connect_timeout", "1"),
    ("connect_timeout", None),
    ("reset_timeout", "1"),
    ("reset", 5),
    ("configure", 5),
    ("check", "SELECT 1"),
    ("reconnect_failed", 5),
    ("connect_kwargs", 5),
    ("connect_kwargs", ["user"]),
    ("name", 5),
    ("driver", 5),
]

BAD_VALUE: list[tuple[str, Any]] = [
    ("min_size", -1),
    ("max_size", 0),
    ("timeout", -1),
    ("timeout", float("nan")),
    ("max_waiting", -1),
    ("max_lifetime", 0),
    ("max_lifetime", -1),
    ("max_idle", -1),
    ("max_uses", -1),
    ("check_window", -0.5),
    ("keepalive", 0),
    ("max_connecting", 0),
    ("reconnect_timeout", -1),
    ("fail_fast_after", -1),
    ("housekeeping_interval", 0),
    ("connect_timeout", -1),
    ("reset_timeout", -1),
    ("reset", "bogus"),
    ("reset", "AUTO"),
    ("driver", "nope"),
]


def _construct(kind: str, **kwargs: Any) -> Any:
    settings: dict[str, Any] = {"driver": make_fake(kind), **kwargs}
    return pool_class(kind)(**settings)


@both
@pytest.mark.parametrize(("arg", "value"), WRONG_TYPE, ids=[f"{a}={v!r}" for a, v in WRONG_TYPE])
def test_a_constructor_argument_of_the_wrong_type_raises_type_error_naming_it(
    kind: str, arg: str, value: Any
) -> None:
    with pytest.raises(TypeError, match=re.escape(arg)):
        _construct(kind, **{arg: value})


@both
@pytest.mark.parametrize(("arg", "value"), BAD_VALUE, ids=[f"{a}={v!r}" for a, v in BAD_VALUE])
def test_a_constructor_argument_with_a_bad_value_raises_value_error_naming_it(
    kind: str, arg: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=re.escape(arg)):
        _construct(kind, **{arg: value})


@both
def test_max_size_below_min_size_raises_value_error_naming_max_size(kind: str) -> None:
    with pytest.raises(ValueError, match="max_size"):
        _construct(kind, min_size=3, max_size=2)


@both
def test_max_size_defaults_to_at_least_min_size(kind: str) -> None:
    pool = _construct(kind, min_size=12)
    assert pool.max_size == 12
    assert _construct(kind, min_size=1).max_size == 10


def test_an_async_adapter_given_to_the_thread_pool_raises_type_error_naming_driver() -> None:
    with pytest.raises(TypeError, match="driver"):
        Pool(driver=FakeAsyncAdapter())


def test_a_sync_adapter_given_to_the_async_pool_raises_type_error_naming_driver() -> None:
    with pytest.raises(TypeError, match="driver"):
        AsyncPool(driver=FakeSyncAdapter())


@pytest.mark.parametrize(
    ("cls", "driver", "package"),
    [
        (AsyncPool, "asyncpg", "asyncpg"),
        (AsyncPool, "psycopg", "psycopg"),
        (Pool, "psycopg", "psycopg"),
        (Pool, "psycopg2", "psycopg2"),
    ],
)
def test_a_driver_whose_package_is_missing_says_which_extra_to_pip_install(
    monkeypatch: pytest.MonkeyPatch, cls: type[Any], driver: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # makes ``import package`` fail
    with pytest.raises(DriverNotInstalled) as info:
        cls(driver=driver)
    assert isinstance(info.value, ImportError)
    assert f"pip install 'pgmarina[{package}]'" in str(info.value)


@both
def test_a_connect_keyword_given_twice_raises_type_error_naming_it(kind: str) -> None:
    with pytest.raises(TypeError, match="user"):
        _construct(kind, connect_kwargs={"user": "a"}, user="b")


@both
def test_connect_keywords_the_adapter_rejects_raise_its_error(kind: str) -> None:
    with pytest.raises(ValueError, match="sslmode"):
        _construct(kind, sslmode="bogus")


@both
def test_connect_kwargs_and_extra_keywords_both_reach_the_driver(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        conn = h.fake.connections[0]
        assert conn.dsn == "postgresql://h/db"
        assert conn.kwargs == {"user": "u", "sslmode": "require"}

    run(kind, body, "postgresql://h/db", connect_kwargs={"user": "u"}, sslmode="require")


# ---------------------------------------------------------------------------
# life cycle


@both
def test_acquire_before_open_raises_pool_not_open(kind: str) -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(PoolNotOpen):
            await h.acquire(timeout=0.1)
        assert h.fake.count("connect") == 0

    run(kind, body)


@both
def test_wait_before_open_raises_pool_not_open(kind: str) -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(PoolNotOpen):
            await h.call("wait", timeout=0.1)

    run(kind, body)


@both
def test_acquire_after_close_raises_pool_closed(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        await h.call("close")
        assert h.pool.closed
        with pytest.raises(PoolClosed):
            await h.acquire(timeout=0.1)

    run(kind, body)


@both
def test_opening_twice_is_harmless_and_opens_no_extra_connections(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        await h.open()
        assert h.stats().connections_opened == 2
        lease = await h.acquire()
        await h.release(lease)
        assert h.stats().size == 2

    run(kind, body, min_size=2)


@both
def test_reopening_a_closed_pool_raises_pool_closed(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        await h.call("close")
        with pytest.raises(PoolClosed):
            await h.open()

    run(kind, body)


@both
def test_closing_twice_is_harmless(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        await h.call("close")
        await h.call("close")
        assert h.stats().size == 0

    run(kind, body)


@both
def test_open_with_wait_fills_min_size(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open(wait=True)
        s = h.stats()
        assert (s.size, s.idle, s.connecting) == (3, 3, 0)

    run(kind, body, min_size=3)


def test_async_with_opens_and_closes_the_pool() -> None:
    async def main() -> None:
        fake = FakeAsyncAdapter()
        async with AsyncPool(driver=fake, **QUIET) as pool:
            assert pool.stats().idle == 1
        assert pool.closed
        assert fake.connections[0].closed_gracefully

    asyncio.run(main())


def test_with_opens_and_closes_the_thread_pool() -> None:
    fake = FakeSyncAdapter()
    with Pool(driver=fake, **QUIET) as pool:
        assert pool.stats().idle == 1
    assert pool.closed
    assert fake.connections[0].closed_gracefully


# ---------------------------------------------------------------------------
# leases


@both
@pytest.mark.parametrize(("value", "error"), [(-1, ValueError), ("1", TypeError)])
def test_acquire_with_a_bad_timeout_raises_naming_timeout(
    kind: str, value: Any, error: type[Exception]
) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        with pytest.raises(error, match="timeout"):
            await h.acquire(timeout=value)
        assert h.stats().in_use == 0

    run(kind, body)


@both
def test_releasing_something_that_is_not_a_lease_raises_type_error(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        with pytest.raises(TypeError):
            await h.release(object())
        with pytest.raises(TypeError):
            await h.release(h.fake.connections[0])  # the bare driver connection

    run(kind, body)


@both
def test_releasing_a_lease_to_another_pool_raises_value_error_and_keeps_the_lease(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        other = Harness(kind)
        try:
            await h.open()
            await other.open()
            lease = await h.acquire()
            with pytest.raises(ValueError):
                await other.release(lease)
            assert not lease.released
            assert lease.execute("SELECT 1") == "ok: SELECT 1"
            assert other.stats().idle == 1
            await h.release(lease)
            assert h.stats().in_use == 0
        finally:
            await other.cleanup()

    run(kind, body)


@both
def test_releasing_a_lease_twice_raises_connection_released_error(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        await h.release(lease)
        with pytest.raises(ConnectionReleasedError):
            await h.release(lease)
        s = h.stats()
        assert (s.idle, s.in_use, s.size) == (1, 0, 1)

    run(kind, body)


@both
def test_using_a_lease_after_release_raises_connection_released_error(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        await h.release(lease)
        assert lease.released
        with pytest.raises(ConnectionReleasedError):
            lease.execute("SELECT 1")
        with pytest.raises(ConnectionReleasedError):
            _ = lease.status
        with pytest.raises(ConnectionReleasedError):
            unwrap(lease)
        assert raw.queries == []

    run(kind, body)


@both
def test_a_lease_passes_for_the_driver_connection_and_forwards_to_it(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        conn_class = FakeAsyncConnection if kind == "async" else FakeSyncConnection
        assert isinstance(lease, conn_class)
        assert unwrap(lease) is h.fake.connections[0]
        assert lease.execute("SELECT 1") == "ok: SELECT 1"
        assert h.fake.connections[0].queries == ["SELECT 1"]
        assert not lease.released
        await h.release(lease)

    run(kind, body)


@both
def test_acquire_release_reuses_the_same_connection(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        for _ in range(5):
            lease = await h.acquire()
            assert unwrap(lease) is h.fake.connections[0]
            await h.release(lease)
        s = h.stats()
        assert (s.acquires, s.connections_opened, s.in_use, s.idle) == (5, 1, 0, 1)

    run(kind, body)


@both
def test_max_uses_replaces_a_connection_after_that_many_leases(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        first = h.fake.connections[0]
        for _ in range(2):
            await h.release(await h.acquire())
        await eventually(lambda: first.closed and h.stats().idle == 1, what="replacement")
        lease = await h.acquire()
        assert unwrap(lease) is not first
        await h.release(lease)

    run(kind, body, max_uses=2)


class _LeaseWithDict(Lease):
    """A custom lease class that adds a ``__dict__`` (no ``__slots__``)."""

    def hello(self) -> str:
        return f"hi from #{self._con.id}"


class _SlottedLease(Lease):
    __slots__ = ()

    def hello(self) -> str:
        return f"hi from #{self._con.id}"


@pytest.mark.parametrize("lease_class", [_LeaseWithDict, _SlottedLease])
def test_an_adapter_may_bring_its_own_lease_class_with_or_without_slots(
    lease_class: type[Lease],
) -> None:
    class Adapter(FakeSyncAdapter):
        pass

    Adapter.lease_class = lease_class
    pool = Pool(driver=Adapter(), **{**QUIET, "max_size": 1})
    pool.open(wait=True)
    try:
        for _ in range(2):  # handed out, given back, handed out again: nothing leaks
            with pool.connection(timeout=1) as conn:
                assert type(conn) is lease_class
                assert conn.hello().startswith("hi from #")
                raw = unwrap(conn)
            assert isinstance(raw, FakeSyncConnection)
            with pytest.raises(ConnectionReleasedError):
                conn.hello()
        s = pool.stats()
        assert (s.in_use, s.idle, s.acquires) == (0, 1, 2)
    finally:
        pool.close()


def test_a_lease_class_that_is_not_a_lease_is_refused_naming_it() -> None:
    class Adapter(FakeSyncAdapter):
        lease_class = dict  # type: ignore[assignment]

    with pytest.raises(TypeError, match="lease_class"):
        Pool(driver=Adapter(), **QUIET)
