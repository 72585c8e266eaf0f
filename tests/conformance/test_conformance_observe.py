"""Observability on every driver x shell: leak warnings, closes by cause, histograms."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest
from conformance_harness import Combo, eventually, run_async

from pgmarina import LeakInfo, PoolStats
from pgmarina._core.stats import COUNTERS


class _Records(logging.Handler):
    """Keeps the records of logger ``pgmarina`` at WARNING and up."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> _Records:
        logging.getLogger("pgmarina").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("pgmarina").removeHandler(self)

    def leaks(self) -> list[str]:
        return [r.getMessage() for r in self.records if "not released" in r.getMessage()]


async def the_forgetful_borrower(combo: Combo, pool: Any) -> Any:
    """Acquires a connection and never gives it back (its frame must be named)."""
    if combo.is_async:
        return await pool.acquire()
    return await asyncio.to_thread(forgetful_in_a_thread, pool)


def forgetful_in_a_thread(pool: Any) -> Any:
    return pool.acquire()


@run_async
async def test_a_lease_held_past_leak_timeout_warns_once_naming_its_acquirer(
    combo: Combo, pg: Any
) -> None:
    seen: list[LeakInfo] = []
    with _Records() as logs:
        pool = await combo.make_pool(
            pg, name="leaky", min_size=1, max_size=2, leak_timeout=0.15,
            housekeeping_interval=0.03, on_leak=seen.append,
        )
        conn = await the_forgetful_borrower(combo, pool)
        await eventually(lambda: len(seen) == 1, what="on_leak called")
        await asyncio.sleep(0.2)  # more housekeeping ticks: still reported once
        assert len(logs.leaks()) == 1
        message = logs.leaks()[0]
        acquirer = "forgetful_in_a_thread" if not combo.is_async else "the_forgetful_borrower"
        assert message.startswith("leaky: connection #")
        assert "leak_timeout=0.15s" in message
        assert f"in {acquirer}" in message
        assert "test_conformance_observe.py" in message
        assert "pool.acquire()" in message  # the source line, as in a traceback
        info = seen[0]
        assert info.pool == "leaky" and info.age >= 0.15 and info.leak_timeout == 0.15
        assert info.frames[-1][2] == acquirer
        assert pool.stats().leaks == 1
        await combo.release(pool, conn)
        # Leased again and held again: a new lease, a new report.
        conn = await the_forgetful_borrower(combo, pool)
        await eventually(lambda: len(seen) == 2, what="second leak reported")
        await combo.release(pool, conn)
        assert pool.stats().leaks == 2
        await combo.close(pool)


@run_async
async def test_no_leak_is_reported_when_leak_timeout_is_off_or_leases_come_back_in_time(
    combo: Combo, pg: Any
) -> None:
    with _Records() as logs:
        off = await combo.make_pool(pg, min_size=1, max_size=1, housekeeping_interval=0.02)
        held = await combo.acquire(off)
        quick = await combo.make_pool(
            pg, min_size=1, max_size=1, leak_timeout=0.5, housekeeping_interval=0.02
        )
        for _ in range(5):
            conn = await combo.acquire(quick)
            await asyncio.sleep(0.05)
            await combo.release(quick, conn)
        await combo.release(off, held)
        assert logs.leaks() == []
        assert off.stats().leaks == quick.stats().leaks == 0
        await combo.close(off)
        await combo.close(quick)


@run_async
async def test_a_failing_on_leak_callback_is_logged_and_the_pool_goes_on(
    combo: Combo, pg: Any
) -> None:
    def explode(info: LeakInfo) -> None:
        raise RuntimeError("on_leak broke")

    with _Records() as logs:
        pool = await combo.make_pool(
            pg, min_size=1, max_size=2, leak_timeout=0.05, housekeeping_interval=0.02,
            on_leak=explode,
        )
        conn = await combo.acquire(pool)
        await eventually(
            lambda: any("on_leak callback raised" in r.getMessage() for r in logs.records)
        )
        await combo.release(pool, conn)
        async with combo.connection(pool) as again:
            assert await combo.query_value(again, "SELECT 1") == 1
        await combo.close(pool)


@run_async
async def test_closed_connections_are_counted_by_cause(combo: Combo, pg: Any) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1, max_uses=2, check_window=None)
    for _ in range(2):  # the second use retires it: "uses"
        conn = await combo.acquire(pool)
        await combo.release(pool, conn)
    await eventually(lambda: pool.stats().closed_uses == 1)
    conn = await combo.acquire(pool)
    await combo.release(pool, conn)
    await combo.expire(pool)  # idle: replaced now, "expired"
    await eventually(lambda: pool.stats().closed_expired == 1)
    admin = await combo.admin(pg)
    conn = await combo.acquire(pool)
    pid = combo.backend_pid(conn)
    await admin.terminate(pid)
    with pytest.raises(combo.driver_errors):
        await combo.query_value(conn, "SELECT 1")
    await combo.release(pool, conn)  # broken
    await eventually(lambda: pool.stats().closed_broken == 1)
    s = pool.stats()
    assert (s.closed_uses, s.closed_expired, s.closed_broken) == (1, 1, 1)
    assert (s.closed_lifetime, s.closed_idle, s.closed_check_failed) == (0, 0, 0)
    await eventually(lambda: pool.stats().idle == 1)  # its replacement
    await combo.close(pool)
    assert pool.stats().closed_other == 1  # that one, at close


@run_async
async def test_closes_for_lifetime_idle_and_failed_checks_are_counted(
    combo: Combo, pg: Any
) -> None:
    aged = await combo.make_pool(
        pg, min_size=1, max_size=1, max_lifetime=0.1, lifetime_jitter=0,
        housekeeping_interval=0.02,
    )
    await eventually(lambda: aged.stats().closed_lifetime >= 1)
    idle = await combo.make_pool(
        pg, min_size=0, max_size=2, max_idle=0.05, housekeeping_interval=0.02
    )
    a = await combo.acquire(idle)
    await combo.release(idle, a)
    await eventually(lambda: idle.stats().closed_idle == 1)
    calls: list[Any] = []
    checked = await combo.make_pool(
        pg, min_size=1, max_size=1, check_window=0,
        check=combo.hook(calls, "SELECT 1", commit=False, fail_first=1),
    )
    conn = await combo.acquire(checked)  # the check fails: replaced, then served
    await combo.release(checked, conn)
    s = checked.stats()
    assert (s.closed_check_failed, s.checks_failed) == (1, 1)
    for pool in (aged, idle, checked):
        await combo.close(pool)


@run_async
async def test_histograms_count_every_acquire_and_every_lease(combo: Combo, pg: Any) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=1, check_window=None)
    before = pool.stats()
    held = await combo.acquire(pool)

    async def waiter() -> None:
        conn = await combo.acquire(pool)
        await combo.release(pool, conn)

    task = asyncio.ensure_future(waiter())
    await eventually(lambda: pool.stats().waiting == 1)
    await asyncio.sleep(0.06)
    await combo.release(pool, held)  # after ~60 ms: the waiter waited that long
    await task
    for _ in range(5):
        conn = await combo.acquire(pool)
        await combo.release(pool, conn)
    s = pool.stats()
    d = s.since(before)
    assert d.acquires == 7
    assert d.wait_histogram.count == 7
    assert d.usage_histogram.count == 7
    waits = d.wait_histogram.cumulative()
    assert dict(waits)[0.05] == 6  # one waited > 50 ms, the others not at all
    assert d.wait_histogram.quantile(1.0) > 0.05
    assert d.wait_histogram.sum == pytest.approx(d.wait_time_total)
    assert d.usage_histogram.quantile(0.99) >= 0.05  # the lease held through the wait
    assert d.usage_histogram.sum == pytest.approx(d.usage_time_total)
    await combo.close(pool)


@run_async
async def test_counters_never_go_down_and_since_gives_their_growth(
    combo: Combo, pg: Any
) -> None:
    pool = await combo.make_pool(pg, min_size=1, max_size=2, max_uses=3)
    snapshots: list[PoolStats] = [pool.stats()]
    for _ in range(4):
        for _ in range(3):
            async with combo.connection(pool) as conn:
                await combo.query_value(conn, "SELECT 1")
        snapshots.append(pool.stats())
    for earlier, later in itertools.pairwise(snapshots):
        delta = later.since(earlier)
        for name in COUNTERS:
            assert getattr(delta, name) >= 0, name
        assert delta.acquires == 3
        assert (delta.size, delta.max_size) == (later.size, later.max_size)  # sizes: now
    total = snapshots[-1].since(snapshots[0])
    assert total.acquires == 12 and total.closed_uses == 4
    with pytest.raises(TypeError, match="earlier"):
        snapshots[-1].since({})  # type: ignore[arg-type]
    await combo.close(pool)


@run_async
async def test_on_leak_may_be_a_coroutine_function_for_async_pools_and_must_be_callable(
    combo: Combo, pg: Any
) -> None:
    with pytest.raises(TypeError, match="on_leak must be callable"):
        combo.pool_class(pg.dsn, driver=combo.driver, on_leak="log it")
    with pytest.raises(ValueError, match="leak_timeout must be > 0"):
        combo.pool_class(pg.dsn, driver=combo.driver, leak_timeout=0)
    seen: list[LeakInfo] = []
    if combo.is_async:

        async def on_leak(info: LeakInfo) -> None:
            await asyncio.sleep(0)
            seen.append(info)

    else:
        on_leak = seen.append  # type: ignore[assignment]
    with _Records():
        pool = await combo.make_pool(
            pg, min_size=1, max_size=1, leak_timeout=0.05, housekeeping_interval=0.02,
            on_leak=on_leak,
        )
        conn = await combo.acquire(pool)
        await eventually(lambda: len(seen) == 1, what="on_leak ran")
        await combo.release(pool, conn)
        await combo.close(pool)
