"""configure= and check= hooks, keepalive pings, resize(), and a pool that is not open."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conformance_harness import Combo, Unhealthy, eventually, run_async

from pgmarina import PoolConnectError, PoolError, PoolNotOpen, PoolTimeout


@run_async
async def test_configure_runs_once_on_every_new_connection(combo: Combo, pg: Any) -> None:
    calls: list[Any] = []
    pool = await combo.make_pool(
        pg, min_size=2, max_size=2, configure=combo.hook(calls, "SET search_path TO configured")
    )
    assert len(calls) == 2
    assert all(isinstance(c, combo.raw_connection_class) for c in calls)
    held = await asyncio.gather(combo.acquire(pool), combo.acquire(pool))
    for conn in held:
        assert await combo.query_value(conn, "SHOW search_path") == "configured"
    for conn in held:
        await combo.release(pool, conn)
    await combo.expire(pool)  # replacements are configured too
    await eventually(lambda: len(calls) == 4)
    conn = await combo.acquire(pool)
    assert await combo.query_value(conn, "SHOW search_path") == "configured"
    await combo.release(pool, conn)


@run_async
async def test_a_configure_hook_that_fails_counts_as_a_failed_connect(
    combo: Combo, pg: Any
) -> None:
    calls: list[Any] = []
    pool = await combo.make_pool(
        pg,
        min_size=0,
        max_size=1,
        wait=False,
        configure=combo.hook(calls, "SELECT 1", fail_first=2),
    )
    conn = await combo.acquire(pool, timeout=5)  # served once the hook stops failing
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)
    s = pool.stats()
    assert len(calls) == 3
    assert (s.connections_failed, s.connections_opened, s.size) == (2, 1, 1)


@run_async
async def test_a_configure_hook_that_always_fails_surfaces_its_error_in_the_timeout(
    combo: Combo, pg: Any
) -> None:
    calls: list[Any] = []
    pool = await combo.make_pool(
        pg,
        min_size=0,
        max_size=1,
        wait=False,
        fail_fast_after=None,
        configure=combo.hook(calls, "SELECT 1", fail_first=10**6),
    )
    with pytest.raises(PoolTimeout) as info:
        await combo.acquire(pool, timeout=0.3)
    assert isinstance(info.value.__cause__, Unhealthy)
    assert "Unhealthy" in str(info.value)
    assert pool.stats().connections_failed >= 1


@run_async
async def test_a_connection_left_in_a_transaction_by_configure_is_not_handed_out_in_it(
    combo: Combo, pg: Any
) -> None:
    # A configure hook that forgets to commit (psycopg opens a transaction implicitly; for
    # asyncpg the hook says BEGIN): the borrower must not start inside that transaction.
    calls: list[Any] = []
    sql = "BEGIN" if combo.driver == "asyncpg" else "SET search_path TO configured"
    pool = await combo.make_pool(
        pg, min_size=0, max_size=1, wait=False, configure=combo.hook(calls, sql, commit=False)
    )
    try:
        conn = await combo.acquire(pool, timeout=1)
    except PoolError as exc:  # refusing such connections is fine too, if it says why
        assert "configure" in f"{exc} {exc.__cause__}"
    else:
        try:
            assert not combo.in_transaction(conn)
        finally:
            await combo.release(pool, conn)
    assert calls


@run_async
async def test_a_custom_check_replaces_the_connections_it_rejects(combo: Combo, pg: Any) -> None:
    calls: list[Any] = []
    pool = await combo.make_pool(
        pg,
        min_size=1,
        max_size=1,
        check_window=0,
        check=combo.hook(calls, "SELECT 1", fail_first=1),
    )
    conn = await combo.acquire(pool)
    first = combo.backend_pid(conn)
    await combo.release(pool, conn)
    # The check rejected the idle connection; the lease is on a fresh replacement, which
    # is handed over straight from its connect, unchecked.
    assert len(calls) == 1
    conn = await combo.acquire(pool)
    assert len(calls) == 2
    assert combo.backend_pid(conn) == first  # the replacement passes its check and is kept
    await combo.release(pool, conn)
    s = pool.stats()
    assert (s.checks_failed, s.connections_opened) == (1, 2)


@run_async
async def test_keepalive_pings_replace_an_idle_connection_whose_backend_died(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(
        pg,
        min_size=1,
        max_size=1,
        check_window=None,
        keepalive=0.1,
        housekeeping_interval=0.05,
    )
    app = combo.app_of(pool)
    (dead,) = await admin.pids(app)
    await admin.terminate(dead)
    # Nobody acquires: housekeeping alone finds the dead connection and replaces it.
    await eventually(lambda: _one_other(admin, app, dead), what="a replacement backend")
    s = pool.stats()
    assert s.connections_lost == 1
    assert s.size == 1
    conn = await combo.acquire(pool)
    assert combo.backend_pid(conn) != dead
    assert await combo.query_value(conn, "SELECT 1") == 1
    await combo.release(pool, conn)


async def _one_other(admin: Any, app: str, dead: int) -> bool:
    pids = await admin.pids(app)
    return len(pids) == 1 and dead not in pids


@run_async
async def test_resize_grows_to_the_new_min_size_and_shrinks_to_the_new_max_size(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    pool = await combo.make_pool(pg, min_size=1, max_size=2)
    app = combo.app_of(pool)
    await combo.call(pool.resize, 3, 5)
    assert (pool.min_size, pool.max_size) == (3, 5)
    await eventually(lambda: pool.stats().idle == 3)
    assert len(await admin.pids(app)) == 3
    await combo.call(pool.resize, 1, 1)
    await eventually(lambda: pool.stats().size == 1)
    await admin.wait_backends(app, 1)
    conn = await combo.acquire(pool)
    with pytest.raises(PoolTimeout):
        await combo.acquire(pool, timeout=0.1)
    await combo.release(pool, conn)


@run_async
async def test_acquire_on_a_pool_that_was_never_opened_raises_pool_not_open(
    combo: Combo, pg: Any
) -> None:
    pool = await combo.make_pool(pg, opened=False)
    t0 = time.monotonic()
    with pytest.raises(PoolNotOpen):
        await combo.acquire(pool, timeout=5)
    assert time.monotonic() - t0 < 0.5
    assert pool.stats().size == 0


@run_async
async def test_open_and_wait_on_an_unreachable_server_raises_and_closes_the_pool(
    combo: Combo, pg: Any
) -> None:
    pool = await combo.make_pool(
        pg,
        dsn=f"postgresql://{pg.user}@127.0.0.1:1/{pg.dbname}",
        opened=False,
        fail_fast_after=0.2,
    )
    t0 = time.monotonic()
    with pytest.raises((PoolConnectError, PoolTimeout)) as info:
        await combo.open(pool, wait=True, timeout=2)
    assert time.monotonic() - t0 < 1.0  # fail fast, not the whole timeout
    assert isinstance(info.value, PoolConnectError)
    assert info.value.__cause__ is not None
    assert pool.closed
    assert pool.stats().size == 0
