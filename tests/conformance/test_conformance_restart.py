"""Server restarts and short outages, on a private cluster of the test's own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conformance_harness import Combo, eventually, run_async

pytestmark = [pytest.mark.private_cluster]


async def _select_1(combo: Combo, pool: Any, timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    conn = await combo.acquire(pool, timeout=timeout)
    try:
        assert await combo.query_value(conn, "SELECT 1") == 1
        return combo.backend_pid(conn), time.monotonic() - t0
    finally:
        await combo.release(pool, conn)


@run_async
async def test_the_pool_serves_again_after_the_server_restarts(
    combo: Combo, private_pg: Any
) -> None:
    pool = await combo.make_pool(private_pg, min_size=2, max_size=2, check_window=0)
    before = {(await _select_1(combo, pool, 5))[0] for _ in range(2)}
    await asyncio.to_thread(private_pg.restart)
    pids = set()
    for _ in range(4):
        pid, _ = await _select_1(combo, pool, 5)
        pids.add(pid)
    assert not pids & before
    assert pool.stats().connections_lost >= 1
    await eventually(lambda: pool.stats().in_use == 0)
    await eventually(lambda: pool.stats().size == 2)


@run_async
async def test_the_pool_serves_again_after_the_server_crashes_and_comes_back(
    combo: Combo, private_pg: Any
) -> None:
    pool = await combo.make_pool(private_pg, min_size=2, max_size=2, check_window=0)
    before = {(await _select_1(combo, pool, 5))[0] for _ in range(2)}
    await asyncio.to_thread(private_pg.kill)
    await asyncio.to_thread(private_pg.start)
    for _ in range(4):
        pid, _ = await _select_1(combo, pool, 10)
        assert pid not in before
    await eventually(lambda: pool.stats().in_use == 0)
    await eventually(lambda: pool.stats().size == 2)


@run_async
async def test_a_borrower_holding_a_connection_across_a_restart_gets_a_fresh_one_next(
    combo: Combo, private_pg: Any
) -> None:
    pool = await combo.make_pool(private_pg, min_size=1, max_size=1, check_window=None)
    conn = await combo.acquire(pool)
    old = combo.backend_pid(conn)
    await asyncio.to_thread(private_pg.restart)
    with pytest.raises(combo.driver_errors):
        await combo.query_value(conn, "SELECT 1")
    await combo.release(pool, conn)
    pid, _ = await _select_1(combo, pool, 5)
    assert pid != old
    assert pool.stats().connections_lost == 1


@run_async
async def test_waiters_during_a_short_outage_are_served_once_the_server_is_back(
    combo: Combo, private_pg: Any
) -> None:
    pool = await combo.make_pool(
        private_pg, min_size=1, max_size=2, check_window=0, fail_fast_after=None
    )
    await _select_1(combo, pool, 5)
    await asyncio.to_thread(private_pg.stop)
    t0 = time.monotonic()
    waiters = [asyncio.create_task(_select_1(combo, pool, 10)) for _ in range(4)]
    await asyncio.sleep(0.8)
    assert not any(w.done() for w in waiters)  # nobody failed during the outage
    assert pool.stats().connections_failed >= 1
    await asyncio.to_thread(private_pg.start)
    outage = time.monotonic() - t0
    results = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert len(results) == 4
    assert all(waited < outage + 2.0 for _, waited in results)
    await eventually(lambda: pool.stats().in_use == 0)
    s = pool.stats()
    assert (s.waiting, s.timeouts) == (0, 0)
