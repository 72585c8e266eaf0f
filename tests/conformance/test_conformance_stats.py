"""stats(), repr() and what the pool lets slip about the password."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from typing import Any

import pytest
from conformance_harness import Combo, eventually, run_async, unique

from pgmarina import PoolConnectError, PoolError, PoolTimeout

COUNTERS = (
    "acquires",
    "waited_acquires",
    "timeouts",
    "too_many_waiters",
    "connections_opened",
    "connections_closed",
    "connections_lost",
    "connections_failed",
    "resets",
    "checks_failed",
    "wait_time_total",
    "usage_time_total",
)


@run_async
async def test_stats_counters_add_up_over_a_known_workload(combo: Combo, pg: Any) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=2, check_window=None)
    s0 = pool.stats()
    assert (s0.min_size, s0.max_size, s0.size, s0.idle, s0.acquires) == (1, 2, 1, 1, 0)
    a = await combo.acquire(pool)  # idle: no wait
    b = await combo.acquire(pool)  # waits for a second connect
    with pytest.raises(PoolTimeout):
        await combo.acquire(pool, timeout=0.05)  # waits in vain
    s1 = pool.stats()
    assert (s1.size, s1.in_use, s1.idle, s1.waiting) == (2, 2, 0, 0)
    assert (s1.acquires, s1.waited_acquires, s1.timeouts) == (2, 2, 1)
    assert s1.wait_time_total > 0
    await combo.release(pool, a)
    await combo.release(pool, b)
    for _ in range(10):
        conn = await combo.acquire(pool)
        await combo.release(pool, conn)
    await eventually(lambda: pool.stats().in_use == 0)
    s2 = pool.stats()
    assert (s2.acquires, s2.waited_acquires, s2.timeouts, s2.too_many_waiters) == (12, 2, 1, 0)
    assert (s2.size, s2.idle, s2.in_use, s2.waiting, s2.connecting) == (2, 2, 0, 0, 0)
    assert (s2.connections_opened, s2.connections_closed, s2.connections_lost) == (2, 0, 0)
    assert (s2.connections_failed, s2.checks_failed) == (0, 0)
    assert s2.usage_time_total > 0
    for name in COUNTERS:  # counters never go down
        assert getattr(s0, name) <= getattr(s1, name) <= getattr(s2, name), name
    await combo.close(pool)
    s3 = pool.stats()
    assert (s3.size, s3.idle, s3.in_use) == (0, 0, 0)
    assert s3.connections_closed == s3.connections_opened == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        s3.size = 5  # type: ignore[misc]


@run_async
async def test_stats_stay_consistent_while_the_pool_is_busy(combo: Combo, pg: Any) -> None:
    # Replacing connections all the time (max_uses=2) changes the set of entries that stats()
    # walks.  Reading stats meanwhile (from another thread for the thread pool, from another
    # task for the asyncio pool, which is not meant to be used across threads) must neither
    # fail nor tell nonsense.
    pool = await combo.make_pool(pg, min_size=2, max_size=4, max_uses=2, check_window=None)
    stop = threading.Event()
    problems: list[str] = []

    def read_once() -> None:
        try:
            s = pool.stats()
            repr(pool)
        except Exception as exc:  # pragma: no cover - what the test looks for
            problems.append(repr(exc))
            stop.set()
            return
        if s.idle < 0 or s.in_use < 0 or s.size > s.max_size:
            problems.append(repr(s))

    def read_in_thread() -> int:
        n = 0
        while not stop.is_set():
            read_once()
            n += 1
        return n

    async def read_in_task() -> int:
        n = 0
        while not stop.is_set():
            read_once()
            n += 1
            await asyncio.sleep(0)
        return n

    async def worker() -> None:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            conn = await combo.acquire(pool)
            await combo.release(pool, conn)

    reading = asyncio.create_task(
        read_in_task() if combo.is_async else asyncio.to_thread(read_in_thread)
    )
    await asyncio.gather(*(worker() for _ in range(6)))
    stop.set()
    reads = await reading
    assert problems == []
    assert reads > 100
    await eventually(lambda: pool.stats().in_use == 0)
    # Once the retired connections have finished closing, every one opened is accounted for.
    await eventually(lambda: _settled(pool.stats()), what="opened - closed == size")
    s = pool.stats()
    assert s.size == s.idle + s.in_use + s.connecting
    assert 2 <= s.size <= 4
    assert s.connections_opened > 10


def _settled(s: Any) -> bool:
    return bool(s.connections_opened - s.connections_closed == s.size)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


def _texts_of(exc: BaseException) -> list[str]:
    out = []
    seen: BaseException | None = exc
    while seen is not None:
        out += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return out


@run_async
async def test_the_password_appears_in_no_repr_stats_error_or_log_message(
    combo: Combo, pg: Any
) -> None:
    admin = await combo.admin(pg)
    role, secret = unique("role"), unique("Pw")
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{secret}'")
    capture = _Capture()
    logger = logging.getLogger("pgmarina")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    texts: list[str] = []
    try:
        dsn = f"postgresql://{role}:{secret}@{pg.host}:{pg.port}/{pg.dbname}"
        pool = await combo.make_pool(pg, dsn=dsn, min_size=1, max_size=1, name=None)
        conn = await combo.acquire(pool)
        assert await combo.query_value(conn, "SELECT current_user") == role
        texts += [repr(pool), str(pool), repr(pool.stats()), str(pool.stats())]
        texts += [repr(conn), str(conn)]
        with pytest.raises(PoolTimeout) as timed_out:
            await combo.acquire(pool, timeout=0.05)
        texts += _texts_of(timed_out.value)
        await combo.release(pool, conn)
        await combo.close(pool)
        texts += [repr(pool), str(pool)]

        # Nothing listens on port 1: every connect fails and the errors say why.
        bad = f"postgresql://{role}:{secret}@127.0.0.1:1/{pg.dbname}"
        down = await combo.make_pool(
            pg, dsn=bad, min_size=1, max_size=1, wait=False, fail_fast_after=0.2
        )
        with pytest.raises(PoolError) as failed:
            await combo.acquire(down, timeout=0.4)
        texts += _texts_of(failed.value)
        with pytest.raises(PoolConnectError) as fast:
            await combo.acquire(down, timeout=5)
        texts += _texts_of(fast.value)
        texts += [repr(down), repr(down.stats())]
        assert down.stats().connections_failed >= 1
        await combo.close(down)
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
    texts += capture.texts
    assert any("connect failed" in t for t in capture.texts)  # the failures were logged
    leaks = [t for t in texts if secret in t]
    assert leaks == []
    assert role in repr(pool) or pg.host in repr(pool)  # the repr still says where it points
    await eventually(lambda: _role_gone(admin, role))
    await admin.execute(f"DROP ROLE {role}")


async def _role_gone(admin: Any, role: str) -> bool:
    return not await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role
    )
