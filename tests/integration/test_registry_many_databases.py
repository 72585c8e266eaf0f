"""Issue 14's done-when test: fifty databases under one connection cap.

A throwaway cluster gets 50 databases; threads hammer them at random
through one :class:`~pgmarina.registry.PoolRegistry` whose ``max_total`` is
far below the sum of the pools' ``max_size``.  A sampler watches the
registry's count and ``pg_stat_activity`` the whole time.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import psycopg
import pytest

from pgmarina.registry import AsyncPoolRegistry, PoolRegistry

N_DBS = 50
MAX_TOTAL = 16
MAX_SIZE = 3  # 50 * 3 = 150 > 16


def _make_databases(server: Any, n: int, prefix: str) -> list[str]:
    dsns = []
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        for i in range(n):
            conn.execute(f"CREATE DATABASE {prefix}{i}")
            dsns.append(server.dsn.rsplit("/", 1)[0] + f"/{prefix}{i}")
    return dsns


class _Sampler(threading.Thread):
    """Samples the registry's budget and the server's client backends.

    The server may still show a backend for a moment after the pool closed
    its connection (the backend exits on its own time): a sample is allowed
    ``max_total`` plus the connections the registry closed in the half second
    before it.
    """

    def __init__(self, server: Any, registry: Any, prefix: str) -> None:
        super().__init__(daemon=True)
        self.server, self.registry, self.prefix = server, registry, prefix
        self.stop = threading.Event()
        self.samples: list[tuple[float, int, int, int]] = []  # t, budget, backends, closed
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.server.dsn, autocommit=True) as conn:
                while not self.stop.wait(0.005):
                    s = self.registry.stats()
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE backend_type = 'client backend' AND datname LIKE %s",
                        (self.prefix + "%",),
                    ).fetchone()
                    closed = sum(p.connections_closed for p in s.pools.values())
                    self.samples.append((time.monotonic(), s.budget_used, row[0], closed))
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc

    def check(self, max_total: int) -> None:
        assert self.error is None, self.error
        assert len(self.samples) > 20, "the sampler saw too little of the run"
        # The registry's closed counter goes down when a pool is collected
        # (it leaves the stats): keep a running total that never drops.
        totals: list[tuple[float, int]] = []
        carried = last = 0
        for t, _, _, closed in self.samples:
            if closed < last:
                carried += last - closed
            last = closed
            totals.append((t, carried + closed))
        for i, (t, used, backends, _) in enumerate(self.samples):
            assert used <= max_total, f"the registry counted {used} > max_total={max_total}"
            j = i
            while j > 0 and t - totals[j - 1][0] <= 0.5:
                j -= 1
            recently_closed = totals[i][1] - totals[j][1]
            assert backends <= max_total + recently_closed, (
                f"pg_stat_activity showed {backends} backends with max_total={max_total} "
                f"and only {recently_closed} closed in the last 0.5s"
            )
        assert max(s[1] for s in self.samples) == max_total, "the cap was never reached"


@pytest.mark.slow
@pytest.mark.private_cluster
def test_fifty_databases_under_load_never_exceed_max_total_and_lose_no_request(
    make_private_pg: Any,
) -> None:
    server = make_private_pg()
    dsns = _make_databases(server, N_DBS, "tenant")
    registry = PoolRegistry(
        max_total=MAX_TOTAL, idle_ttl=1.0, min_size=1, max_size=MAX_SIZE, driver="psycopg",
        timeout=30.0,
    )
    sampler = _Sampler(server, registry, "tenant")
    sampler.start()
    served = [0] * 24
    failures: list[BaseException] = []

    def client(n: int) -> None:
        rng = random.Random(n)
        for _ in range(40):
            dsn = rng.choice(dsns)
            try:
                with registry.connection(dsn) as conn:
                    (one,) = conn.execute("SELECT 1 FROM pg_sleep(0.002)").fetchone()
                    assert one == 1
                served[n] += 1
            except BaseException as exc:  # counted: no request may be lost
                failures.append(exc)

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(len(served))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert failures == []
        assert sum(served) == 40 * len(served)
        stats = registry.stats()
        assert stats.pools_created >= N_DBS // 2
        assert stats.reclaims > 0  # pools made room for each other
        # Idle pools are collected: all of them, and their connections closed.
        deadline = time.monotonic() + 10
        while (len(registry) or registry.stats().budget_used) and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = registry.stats()
        assert len(stats.pools) == 0 and stats.pools_collected == stats.pools_created
        assert stats.budget_used == 0
    finally:
        sampler.stop.set()
        sampler.join(5)
        registry.close()
    sampler.check(MAX_TOTAL)


@pytest.mark.slow
@pytest.mark.private_cluster
def test_async_registry_on_twenty_databases_keeps_the_cap_and_serves_every_request(
    make_private_pg: Any,
) -> None:
    server = make_private_pg()
    dsns = _make_databases(server, 20, "shard")
    max_total = 8

    async def main() -> tuple[int, Any]:
        registry = AsyncPoolRegistry(
            max_total=max_total, idle_ttl=0.5, min_size=1, max_size=3, driver="asyncpg",
            timeout=30.0,
        )
        sampler = _Sampler(server, registry, "shard")
        sampler.start()
        served = 0

        async def client(n: int) -> None:
            nonlocal served
            rng = random.Random(n)
            for _ in range(40):
                async with registry.connection(rng.choice(dsns)) as conn:
                    assert await conn.fetchval("SELECT 1 FROM pg_sleep(0.002)") == 1
                served += 1

        try:
            await asyncio.gather(*(client(n) for n in range(20)))
            deadline = time.monotonic() + 10
            while (len(registry) or registry.stats().budget_used) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stats = registry.stats()
        finally:
            sampler.stop.set()
            await registry.close()
            sampler.join(5)
        sampler.check(max_total)
        return served, stats

    served, stats = asyncio.run(main())
    assert served == 20 * 40
    # (a pool idle for 0.5s mid-run may be collected and made again)
    assert stats.pools_collected == stats.pools_created >= 20
    assert stats.budget_used == 0
    assert stats.reclaims > 0
