"""The registry's budget under faults: hung and failing connects, cancelled
waiters, closing while connects are under way.  No permit may be lost (the
budget would shrink for good) and none may be counted twice."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from conformance.conformance_harness import dsn_via
from faultproxy import FaultProxy
from pgmarina import PoolConnectError, PoolTimeout
from pgmarina.registry import AsyncPoolRegistry, PoolRegistry


def _eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.mark.slow
def test_closing_a_registry_while_connects_hang_gives_every_permit_back_thread(
    pg: Any, pg_proxy: FaultProxy
) -> None:
    pg_proxy.blackhole()
    registry = PoolRegistry(
        max_total=3, min_size=2, driver="psycopg", connect_timeout=0.5, fail_fast_after=None
    )
    dsn = dsn_via(pg, pg_proxy)
    registry.pool(dsn, application_name="a")
    registry.pool(dsn, application_name="b")
    assert registry.stats().budget_used == 3  # 2 + 1 connects hang; the cap holds
    registry.close(timeout=0.1)
    _eventually(lambda: registry.stats().budget_used == 0)


def test_closing_a_registry_while_connects_hang_gives_every_permit_back_async(
    pg: Any, pg_proxy: FaultProxy
) -> None:
    async def main() -> None:
        pg_proxy.blackhole()
        registry = AsyncPoolRegistry(max_total=3, min_size=2, driver="asyncpg")
        dsn = dsn_via(pg, pg_proxy)
        await registry.pool(dsn, server_settings={"application_name": "a"})
        await registry.pool(dsn, server_settings={"application_name": "b"})
        await asyncio.sleep(0.05)
        assert registry.stats().budget_used == 3
        await registry.close(timeout=0.1)
        assert registry._budget is not None and registry._budget.used == 0

    asyncio.run(main())


def test_failing_connects_nobody_waits_for_any_more_give_their_permits_back(
    pg: Any, pg_proxy: FaultProxy
) -> None:
    pg_proxy.stop_accepting()
    with PoolRegistry(
        max_total=2, min_size=0, driver="psycopg", fail_fast_after=None, backoff_max=0.05
    ) as registry:
        pool = registry.pool(dsn_via(pg, pg_proxy))
        with pytest.raises((PoolTimeout, PoolConnectError)), pool.connection(timeout=0.3):
            pass
        _eventually(lambda: registry.stats().budget_used == 0)
        pg_proxy.start_accepting()
        with pool.connection(timeout=5) as conn:
            conn.execute("SELECT 1")
        assert registry.stats().budget_used == 1


def test_a_cancelled_waiter_leaves_no_claim_that_holds_a_permit_for_ever(pg: Any) -> None:
    async def main() -> None:
        async with AsyncPoolRegistry(max_total=1, min_size=0, driver="asyncpg") as registry:
            a = await registry.pool(pg.dsn, server_settings={"application_name": "a"})
            b = await registry.pool(pg.dsn, server_settings={"application_name": "b"})
            c = await registry.pool(pg.dsn, server_settings={"application_name": "c"})
            held = await a.acquire()
            waiting_b = asyncio.ensure_future(b.fetchval("SELECT 1"))
            await asyncio.sleep(0.05)
            waiting_b.cancel()  # b claimed the permit, then left
            with pytest.raises(asyncio.CancelledError):
                await waiting_b
            waiting_c = asyncio.ensure_future(c.fetchval("SELECT 2"))
            await asyncio.sleep(0.05)
            await a.release(held)
            # a's connection goes idle; c (still waiting) gets it, b's stale
            # claim is passed over.
            assert await asyncio.wait_for(waiting_c, 5) == 2
            await asyncio.sleep(0.05)
            stats = registry.stats()
            assert stats.budget_used == 1 and stats.size == 1

    asyncio.run(main())
