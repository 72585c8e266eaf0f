"""Bad networks, through the fault proxy: refused connects, partitions (blackholes).

A thread pool that blocks on a blackholed socket would block the test for ever, so when a
step overruns its bound the test resets every proxied connection (which ends the blocked call
with an error) before failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conformance_harness import Combo, dsn_via, eventually, run_async

from faultproxy import FaultProxy
from pgmarina import PoolConnectError, PoolTimeout

# adapters/base.py (SyncAdapter) documents that the thread pool cannot bound a query on a
# dead network: only connects are bounded.  The expectation below is what reset_timeout
# promises ("bound on a reset, check or ping round trip"); strict, so that a fix shows up.


@contextlib.asynccontextmanager
async def unblocking(
    combo: Combo, pool: Any, proxy: FaultProxy, tasks: list[asyncio.Task[Any]]
) -> AsyncIterator[None]:
    """On failure, free calls stuck on a blackholed socket and hand back what they got."""
    try:
        yield
    except BaseException:
        proxy.pass_through()
        proxy.reset_all()
        for task in tasks:
            try:
                result = await asyncio.wait_for(task, 10)
            except BaseException:
                continue
            if result is not None and hasattr(result, "released") and not result.released:
                await combo.release(pool, result)
        raise


async def _cycle(combo: Combo, pool: Any, timeout: float = 5) -> int:
    conn = await combo.acquire(pool, timeout=timeout)
    try:
        assert await combo.query_value(conn, "SELECT 1") == 1
        return combo.backend_pid(conn)
    finally:
        await combo.release(pool, conn)


@run_async
async def test_acquire_fails_fast_while_the_server_refuses_connections_and_recovers_after(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    pool = await combo.make_pool(
        pg, dsn=dsn_via(pg, pg_proxy), min_size=1, max_size=2, fail_fast_after=0.5, check_window=0
    )
    await _cycle(combo, pool)
    pg_proxy.stop_accepting()
    pg_proxy.reset_all()
    t0 = time.monotonic()
    with pytest.raises(PoolTimeout):  # not failing for long enough to fail fast yet
        await combo.acquire(pool, timeout=0.3)
    assert pool.stats().connections_failed >= 1
    await asyncio.sleep(max(0.0, 0.6 - (time.monotonic() - t0)))
    for _ in range(3):
        t1 = time.monotonic()
        with pytest.raises(PoolConnectError) as fast:
            await combo.acquire(pool, timeout=5)
        assert time.monotonic() - t1 < 0.1
        assert fast.value.__cause__ is not None
    pg_proxy.start_accepting()
    t2 = time.monotonic()

    async def served() -> bool:
        try:
            await _cycle(combo, pool, timeout=1)
        except PoolConnectError:
            return False
        return True

    await eventually(served, timeout=3, what="the pool recovers")
    assert time.monotonic() - t2 < 2.0
    await eventually(lambda: pool.stats().in_use == 0)


@run_async
async def test_a_health_check_on_a_blackholed_connection_gives_up_after_reset_timeout(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    pool = await combo.make_pool(
        pg,
        dsn=dsn_via(pg, pg_proxy),
        min_size=1,
        max_size=1,
        check_window=0,
        reset_timeout=0.3,
        connect_timeout=0.5,
    )
    pid = await _cycle(combo, pool)
    pg_proxy.blackhole()
    t0 = time.monotonic()
    caller = asyncio.create_task(combo.acquire(pool, timeout=3))
    async with unblocking(combo, pool, pg_proxy, [caller]):
        await eventually(
            lambda: pool.stats().checks_failed == 1, timeout=1.5, what="the check times out"
        )
        assert time.monotonic() - t0 < 1.0
        pg_proxy.pass_through()
        conn = await asyncio.wait_for(caller, 5)
    try:
        assert combo.backend_pid(conn) != pid
        assert await combo.query_value(conn, "SELECT 1") == 1
    finally:
        await combo.release(pool, conn)
    assert pool.stats().connections_lost == 1


@run_async
async def test_a_reset_on_a_blackholed_connection_gives_up_after_reset_timeout(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    # The replacement connect may start while the network is still blackholed; it then
    # hangs until connect_timeout (libpq: whole seconds, at least 2) and is retried.
    pool = await combo.make_pool(
        pg,
        dsn=dsn_via(pg, pg_proxy),
        min_size=1,
        max_size=1,
        reset_timeout=0.3,
        connect_timeout=2,
    )
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await combo.begin(conn)  # the release must roll back: a round trip
    pg_proxy.blackhole()
    t0 = time.monotonic()
    releasing = asyncio.create_task(combo.release(pool, conn))
    async with unblocking(combo, pool, pg_proxy, [releasing]):
        await asyncio.wait_for(asyncio.shield(releasing), 1.5)
    assert time.monotonic() - t0 < 1.0
    pg_proxy.pass_through()
    assert await _cycle(combo, pool) != pid  # a connection in an unknown state is replaced


@pytest.mark.slow
@run_async
async def test_a_connect_that_hangs_gives_up_after_connect_timeout(
    combo: Combo, pg: Any, pg_proxy: FaultProxy
) -> None:
    # Whole seconds, at least 2: libpq cannot bound a connect more finely, so that is all a
    # thread pool can promise and the test asks no more of any pair.
    pool = await combo.make_pool(
        pg,
        dsn=dsn_via(pg, pg_proxy),
        min_size=0,
        max_size=1,
        connect_timeout=2,
        fail_fast_after=None,
        wait=False,
    )
    pg_proxy.blackhole()
    t0 = time.monotonic()
    with pytest.raises(PoolTimeout):
        await combo.acquire(pool, timeout=0.3)
    async with unblocking(combo, pool, pg_proxy, []):
        await eventually(
            lambda: pool.stats().connections_failed >= 1,
            timeout=3.5,
            what="the hanging connect is abandoned",
        )
        assert 1.9 <= time.monotonic() - t0 < 3.0
    pg_proxy.pass_through()
    await _cycle(combo, pool, timeout=5)
    s = pool.stats()
    assert (s.size, s.connections_opened) == (1, 1)
