"""Connect errors against real servers: rejections fail at once, outages are waited out.

A wrong password, a role or a database that does not exist will not pass by waiting: the
pool fails its callers at once with the server's words (and ``open(wait=True)`` raises
them), keeps retrying every ``backoff_max``, and serves again as soon as the cause is fixed.
A server that is down or full is an outage: callers wait.  Around that: a slow
``reconnect_failed`` callback, a ``configure`` that overruns ``connect_timeout`` or raises a
BaseException, and a connect that hangs must not stop or slow the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from conformance_harness import Combo, Interrupted, eventually, run_async, unique

from faultproxy import FaultProxy
from pgmarina import PoolConnectError, PoolTimeout

_SAME: Any = object()


def _dsn(server: Any, *, user: str | None = None, password: Any = _SAME,
         dbname: str | None = None) -> str:
    """A URI DSN for ``server`` with some of its parts replaced."""
    user = server.user if user is None else user
    password = server.password if password is _SAME else password
    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password, safe="")
    db = quote(server.dbname if dbname is None else dbname, safe="")
    return f"postgresql://{auth}@{server.host}:{server.port}/{db}"


def _texts(exc: BaseException) -> str:
    """Everything an error shows, its causes included."""
    out = []
    seen: BaseException | None = exc
    while seen is not None:
        out += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(out)


async def _refused_at_once(combo: Combo, pool: Any, *words: str) -> PoolConnectError:
    """``acquire`` fails with a PoolConnectError naming ``words``, well within a second."""
    t0 = time.monotonic()
    with pytest.raises(PoolConnectError) as info:
        await combo.acquire(pool, timeout=10)
    took = time.monotonic() - t0
    assert took < 1.0, f"refused after {took:.2f}s, not at once"
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert isinstance(info.value.__cause__, combo.driver_errors)
    return info.value


async def _open_raises_at_once(combo: Combo, pool: Any, *words: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(PoolConnectError) as info:
        await combo.open(pool, wait=True, timeout=10)
    assert time.monotonic() - t0 < 1.0  # not fail_fast_after (5 s), not the timeout
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert pool.closed


async def _served_again(combo: Combo, pool: Any, within: float) -> float:
    """Acquire until it succeeds; how long that took (must be within ``within``)."""
    t0 = time.monotonic()
    while True:
        try:
            conn = await combo.acquire(pool, timeout=within)
        except PoolConnectError:
            if time.monotonic() - t0 > within:
                raise
            await asyncio.sleep(0.02)
            continue
        try:
            assert await combo.query_value(conn, "SELECT 1") == 1
        finally:
            await combo.release(pool, conn)
        return time.monotonic() - t0


async def _with_passwords(combo: Combo, cluster: Any) -> Any:
    """Make ``cluster`` ask every role but the superuser for a password; return an admin."""
    admin = await combo.admin(cluster)
    (cluster.data_dir / "pg_hba.conf").write_text(
        "local all all trust\n"
        f"host all {cluster.user} {cluster.host}/32 trust\n"
        f"host all all {cluster.host}/32 scram-sha-256\n"
    )
    assert await admin.fetchval("SELECT pg_reload_conf()")
    probe = unique("probe")
    await admin.execute(f"CREATE ROLE {probe} LOGIN PASSWORD 'x{probe}'")

    async def asks_for_a_password() -> bool:
        try:
            conn = await asyncpg.connect(_dsn(cluster, user=probe, password="wrong"))
        except asyncpg.InvalidPasswordError:
            return True
        await conn.close()
        return False

    await eventually(asks_for_a_password, what="pg_hba.conf reloaded")
    return admin


# ---------------------------------------------------------------------------
# rejections


@pytest.mark.private_cluster
@run_async
async def test_a_wrong_password_fails_at_once_and_the_pool_recovers_once_it_is_right(
    combo: Combo, make_private_pg: Callable[..., Any]
) -> None:
    # The defect: a wrong password was retried like an outage; callers waited for
    # fail_fast_after (or timed out) with the server's reason only in __cause__.
    cluster = make_private_pg()
    admin = await _with_passwords(combo, cluster)
    role, right, wrong = unique("role"), unique("Right"), unique("Wrong")
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{right}'")
    dsn = _dsn(cluster, user=role, password=wrong)

    opening = await combo.make_pool(cluster, dsn=dsn, min_size=1, opened=False)
    await _open_raises_at_once(combo, opening, "password authentication failed")

    pool = await combo.make_pool(cluster, dsn=dsn, min_size=0, wait=False, backoff_max=0.3)
    error = await _refused_at_once(combo, pool, "password authentication failed", role)
    assert wrong not in _texts(error) and right not in _texts(error)
    await _refused_at_once(combo, pool, "password authentication failed")
    assert pool.stats().timeouts == 0

    # the password is rotated to the one the pool has: it gets in within ~backoff_max
    await admin.execute(f"ALTER ROLE {role} PASSWORD '{wrong}'")
    assert await _served_again(combo, pool, within=3.0) < 1.5
    async with combo.connection(pool) as conn:
        assert await combo.query_value(conn, "SELECT current_user") == role


@run_async
async def test_a_missing_database_fails_at_once_and_is_picked_up_once_created(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    db = unique("db")
    dsn = _dsn(pg, dbname=db)
    opening = await combo.make_pool(pg, dsn=dsn, min_size=1, opened=False)
    await _open_raises_at_once(combo, opening, f'database "{db}" does not exist')

    pool = await combo.make_pool(pg, dsn=dsn, min_size=0, wait=False, backoff_max=0.3)
    await _refused_at_once(combo, pool, f'database "{db}" does not exist')
    await _refused_at_once(combo, pool, "rejected")
    await admin.execute(f"CREATE DATABASE {db}")
    try:
        assert await _served_again(combo, pool, within=3.0) < 1.5
        async with combo.connection(pool) as conn:
            assert await combo.query_value(conn, "SELECT current_database()") == db
    finally:
        await combo.close(pool)
        await admin.execute(f"DROP DATABASE {db} WITH (FORCE)")


@run_async
async def test_a_missing_role_fails_at_once_and_is_picked_up_once_created(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    role = unique("role")
    dsn = _dsn(pg, user=role)
    opening = await combo.make_pool(pg, dsn=dsn, min_size=1, opened=False)
    await _open_raises_at_once(combo, opening, role)

    pool = await combo.make_pool(pg, dsn=dsn, min_size=0, wait=False, backoff_max=0.3)
    await _refused_at_once(combo, pool, role, "rejected")
    password = f" PASSWORD '{pg.password}'" if pg.password is not None else ""
    await admin.execute(f"CREATE ROLE {role} LOGIN{password}")
    try:
        assert await _served_again(combo, pool, within=3.0) < 1.5
        async with combo.connection(pool) as conn:
            assert await combo.query_value(conn, "SELECT current_user") == role
    finally:
        await combo.close(pool)
        await eventually(
            lambda: _no_backends_of(admin, role), what=f"{role}'s backends gone"
        )
        await admin.execute(f"DROP ROLE {role}")


async def _no_backends_of(admin: Any, role: str) -> bool:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = $1"
    return not await admin.fetchval(sql, role)


# ---------------------------------------------------------------------------
# outages are still waited out


@pytest.mark.slow
@pytest.mark.private_cluster
@run_async
async def test_a_stopped_server_is_waited_for_and_the_waiting_caller_is_served_once_it_starts(
    combo: Combo, private_pg: Any
) -> None:
    pool = await combo.make_pool(private_pg, min_size=1, max_size=1, backoff_max=0.2)
    await asyncio.to_thread(private_pg.stop)
    await combo.expire(pool)  # drop the dead connection: the pool must connect
    # within fail_fast_after a caller waits (and times out), it is not refused
    with pytest.raises(PoolTimeout):
        await combo.acquire(pool, timeout=0.5)
    waiting = asyncio.ensure_future(combo.acquire(pool, timeout=15))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await asyncio.to_thread(private_pg.start)
    conn = await asyncio.wait_for(waiting, 15)
    try:
        assert await combo.query_value(conn, "SELECT 1") == 1
    finally:
        await combo.release(pool, conn)


@pytest.mark.private_cluster
@run_async
async def test_too_many_connections_is_an_outage_not_a_rejection(
    combo: Combo, make_private_pg: Callable[..., Any]
) -> None:
    cluster = make_private_pg(
        {"max_connections": 3, "superuser_reserved_connections": 0, "reserved_connections": 0}
    )
    admin = await combo.admin(cluster)
    held = [await asyncpg.connect(cluster.dsn) for _ in range(2)]  # with admin: full
    try:
        pool = await combo.make_pool(cluster, min_size=0, max_size=1, wait=False)
        with pytest.raises(PoolTimeout) as info:
            await combo.acquire(pool, timeout=0.5)
        assert "too many clients" in _texts(info.value)
        assert pool.stats().connections_failed >= 1
        await held.pop().close()
        assert await _served_again(combo, pool, within=5.0) < 3.0
    finally:
        for conn in held:
            await conn.close()
    assert await admin.fetchval("SELECT 1") == 1


# ---------------------------------------------------------------------------
# reconnect_failed


@pytest.mark.slow
@pytest.mark.private_cluster
@run_async
async def test_a_slow_reconnect_failed_callback_does_not_delay_recovery(
    combo: Combo, private_pg: Any
) -> None:
    # The defect: the callback ran inside the pool's only reconnect attempt, so one
    # that took 20 s kept acquires failing long after the server was back.
    told: list[float] = []
    release_sync = threading.Event()
    release_async = asyncio.Event()

    def slow(pool: Any) -> None:
        told.append(time.monotonic())
        release_sync.wait(30)

    async def slow_async(pool: Any) -> None:
        told.append(time.monotonic())
        await release_async.wait()

    pool = await combo.make_pool(
        private_pg,
        min_size=1,
        max_size=1,
        reconnect_timeout=0.3,
        backoff_max=0.2,
        reconnect_failed=slow_async if combo.is_async else slow,
    )
    try:
        await asyncio.to_thread(private_pg.stop)
        await combo.expire(pool)
        await eventually(lambda: told, what="reconnect_failed called")
        await asyncio.to_thread(private_pg.start)
        assert await _served_again(combo, pool, within=5.0) < 2.0
        assert len(told) == 1  # and it is still running
    finally:
        release_sync.set()
        release_async.set()


# ---------------------------------------------------------------------------
# configure


@pytest.mark.slow
@run_async
async def test_a_configure_that_overruns_connect_timeout_is_cut_off_at_connect_timeout(
    combo: Combo, pg: Any
) -> None:
    # The defect (thread pool): connect_timeout did not bound configure, and
    # open(wait=True, timeout=4) returned after the 8 s configure.
    calls: list[Any] = []
    pool = await combo.make_pool(
        pg,
        min_size=1,
        max_size=1,
        opened=False,
        connect_timeout=0.5,
        configure=combo.hook(calls, "SELECT pg_sleep(4)"),
    )
    t0 = time.monotonic()
    with pytest.raises(PoolTimeout) as info:
        await combo.open(pool, wait=True, timeout=1.5)
    took = time.monotonic() - t0
    assert took < 2.2, f"open(wait=True, timeout=1.5) took {took:.2f}s"
    assert "connect (and configure) timed out after 0.5s" in str(info.value)
    assert calls, "configure ran"
    assert pool.closed
    await eventually(lambda: pool.stats().size == 0, what="nothing kept")


@run_async
async def test_a_configure_raising_a_base_exception_leaves_the_pool_working(
    combo: Combo, pg: Any
) -> None:
    # The defect (thread pool): the worker thread died and the pool showed
    # "1 connecting" for ever; with max_size=1 every acquire timed out "all in use".
    state = {"calls": 0}

    def configure(conn: Any) -> None:
        state["calls"] += 1
        if state["calls"] == 1:
            raise Interrupted("configure raised a BaseException")

    async def configure_async(conn: Any) -> None:
        configure(conn)

    pool = await combo.make_pool(
        pg,
        min_size=1,
        max_size=1,
        timeout=5,
        housekeeping_interval=60,
        configure=configure_async if combo.is_async else configure,
    )
    for _ in range(2):
        async with combo.connection(pool, timeout=2) as conn:
            assert await combo.query_value(conn, "SELECT 1") == 1
    s = pool.stats()
    assert (s.connections_failed, s.connections_opened, s.connecting) == (1, 1, 0)
    assert "0 connecting" in repr(pool)


# ---------------------------------------------------------------------------
# open(wait=True, timeout=T) keeps to T


@run_async
async def test_open_with_wait_returns_within_its_timeout_while_connects_hang(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    # The defect (thread pool): on timeout, open() closed the pool and waited for
    # the worker stuck in a connect, returning seconds after its timeout.
    pg_proxy.blackhole()
    pool = await combo.make_pool(
        pg, dsn=_dsn_through(pg, pg_proxy), min_size=1, opened=False, connect_timeout=10
    )
    t0 = time.monotonic()
    try:
        with pytest.raises(PoolTimeout):
            await combo.open(pool, wait=True, timeout=1.0)
        took = time.monotonic() - t0
        assert took < 1.6, f"open(wait=True, timeout=1) took {took:.2f}s"
        assert pool.closed
    finally:
        with contextlib.suppress(Exception):
            pg_proxy.reset_all()


def _dsn_through(server: Any, proxy: FaultProxy) -> str:
    return _dsn(server).replace(f"@{server.host}:{server.port}/", f"@{proxy.host}:{proxy.port}/")
