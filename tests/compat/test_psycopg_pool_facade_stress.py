"""A random mix of requests on the psycopg_pool façade: nothing leaks, nothing is handed twice.

Many threads (or tasks) share a few connections and, at random, use ``connection()`` or
``getconn``/``putconn``, time out, raise inside their block, leave a transaction open, close
their connection, or (tasks) get cancelled.  Afterwards every connection is back, the pool
holds exactly the server backends it counts, and no connection was ever out twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg_pool_harness import eventually, unique

from pgmarina.compat import psycopg_pool as facade

SECONDS = 2.0


class Oops(Exception):
    pass


class Ledger:
    """Which connections are out: one handed out twice at once is a failure."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.out: set[int] = set()
        self.served = 0

    def take(self, conn: Any) -> None:
        with self.lock:
            assert id(conn) not in self.out, "a connection was handed out twice"
            self.out.add(id(conn))
            self.served += 1

    def give(self, conn: Any) -> None:
        with self.lock:
            self.out.discard(id(conn))


async def _backends(dsn: str, app: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app]
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


def _settled(pool: Any) -> None:
    stats = pool.get_stats()
    assert stats["requests_waiting"] == 0
    assert stats["pool_available"] == stats["pool_size"], stats
    assert stats["pool_size"] <= pool.max_size
    assert pool._leases == {}


@pytest.mark.slow
@pytest.mark.parametrize("null", [False, True], ids=["pool", "null"])
def test_threads_doing_everything_at_random_lose_and_share_nothing(pg: Any, null: bool) -> None:
    app = unique("stress")
    ledger = Ledger()
    cls = facade.NullConnectionPool if null else facade.ConnectionPool
    sizes = {"max_size": 4} if null else {"min_size": 2, "max_size": 4}
    pool = cls(pg.dsn, kwargs={"application_name": app}, timeout=0.5, open=False, **sizes)
    pool.open(wait=True, timeout=10)
    stop = time.monotonic() + SECONDS
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < stop:
                action = rng.random()
                try:
                    if action < 0.5:
                        with pool.connection(timeout=rng.choice([0.05, 0.5])) as conn:
                            ledger.take(conn)
                            try:
                                conn.execute("SELECT 1")
                                if rng.random() < 0.2:
                                    raise Oops
                            finally:
                                ledger.give(conn)
                    else:
                        conn = pool.getconn(timeout=rng.choice([0.05, 0.5]))
                        ledger.take(conn)
                        try:
                            if rng.random() < 0.3:
                                conn.execute("SELECT 1")  # left in a transaction
                            if rng.random() < 0.05:
                                conn.close()
                        finally:
                            ledger.give(conn)
                            pool.putconn(conn)
                except (facade.PoolTimeout, Oops):
                    pass
        except BaseException as exc:  # reported below: a thread must not die silently
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SECONDS + 15)
    try:
        assert not errors, errors
        assert ledger.served > 100
        # A replacement for a connection closed at the end may still be connecting.
        asyncio.run(eventually(lambda: _all_back(pool), what="all back"))
        _settled(pool)
        expected = pool.get_stats()["pool_size"]
        assert asyncio.run(_backends(pg.dsn, app)) == expected
    finally:
        pool.close()
    asyncio.run(eventually(lambda: _zero(pg.dsn, app), what="no backend left"))


@pytest.mark.slow
@pytest.mark.parametrize("null", [False, True], ids=["pool", "null"])
def test_tasks_doing_everything_at_random_and_being_cancelled_lose_nothing(
    pg: Any, null: bool
) -> None:
    app = unique("stress")
    ledger = Ledger()

    async def body() -> None:
        cls = facade.AsyncNullConnectionPool if null else facade.AsyncConnectionPool
        sizes = {"max_size": 4} if null else {"min_size": 2, "max_size": 4}
        pool = cls(pg.dsn, kwargs={"application_name": app}, timeout=0.5, open=False, **sizes)
        await pool.open(wait=True, timeout=10)
        stop = time.monotonic() + SECONDS

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop:
                action = rng.random()
                try:
                    if action < 0.5:
                        async with pool.connection(timeout=rng.choice([0.05, 0.5])) as conn:
                            ledger.take(conn)
                            try:
                                await conn.execute("SELECT pg_sleep(0.001)")
                                if rng.random() < 0.2:
                                    raise Oops
                            finally:
                                ledger.give(conn)
                    else:
                        conn = await pool.getconn(timeout=rng.choice([0.05, 0.5]))
                        ledger.take(conn)
                        try:
                            if rng.random() < 0.3:
                                await conn.execute("SELECT 1")
                            if rng.random() < 0.05:
                                await conn.close()
                        finally:
                            ledger.give(conn)
                            await pool.putconn(conn)
                except (facade.PoolTimeout, Oops):
                    pass

        tasks = [asyncio.ensure_future(worker(n)) for n in range(24)]
        running = list(tasks)
        rng = random.Random(7)
        while time.monotonic() < stop:
            await asyncio.sleep(rng.uniform(0.01, 0.05))
            victim = rng.choice(running)
            if not victim.done():
                victim.cancel()
                running[running.index(victim)] = task = asyncio.ensure_future(
                    worker(rng.randrange(1000))
                )
                tasks.append(task)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        try:
            real = [r for r in results if isinstance(r, BaseException)
                    and not isinstance(r, asyncio.CancelledError)]
            assert not real, real
            assert ledger.served > 100
            await eventually(lambda: _all_back(pool), what="all back")
            _settled(pool)
            assert await _backends(pg.dsn, app) == pool.get_stats()["pool_size"]
        finally:
            await pool.close()
        await eventually(lambda: _zero(pg.dsn, app), what="no backend left")

    asyncio.run(body())


def _all_back(pool: Any) -> bool:
    stats = pool.get_stats()
    return bool(stats["pool_available"] == stats["pool_size"])


async def _zero(dsn: str, app: str) -> bool:
    return await _backends(dsn, app) == 0


def test_the_ledger_catches_a_connection_handed_out_twice() -> None:
    ledger = Ledger()
    conn = object()
    ledger.take(conn)
    with pytest.raises(AssertionError, match="twice"), contextlib.suppress(RuntimeError):
        ledger.take(conn)
