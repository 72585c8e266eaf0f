"""AsyncPool's housekeeping comes from the shared clock thread, not a timer on its loop.

A pending timer makes every turn of the event loop compute a select timeout
and look at the timer heap, so an idle pool must leave the loop's timer heap
as it found it, while its housekeeping still runs on time.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from typing import Any

from fakes import FakeAsyncAdapter
from harness import eventually

from pgmarina import AsyncPool
from pgmarina.shells import _ticker


def _live_timers(loop: Any) -> list[Any]:
    return [h for h in loop._scheduled if not h.cancelled()]


def test_an_open_pool_keeps_no_timer_on_its_loop_and_still_ticks() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        ticks: list[float] = []
        pool = AsyncPool("postgresql://h/db", driver=FakeAsyncAdapter(), min_size=1,
                         housekeeping_interval=0.05)
        real_tick = pool._housekeeping_tick

        def counted() -> None:
            assert threading.current_thread() is threading.main_thread()  # on the loop
            ticks.append(time.monotonic())
            real_tick()

        pool._housekeeping_tick = counted  # type: ignore[method-assign]
        async with pool:
            async with pool.connection():
                pass
            await eventually(lambda: len(ticks) >= 4, what="four housekeeping ticks")
            assert _live_timers(loop) == []
            gaps = [b - a for a, b in itertools.pairwise(ticks)]
            assert min(gaps) >= 0.045, gaps  # an interval apart: not bunched up
        count = len(ticks)
        await asyncio.sleep(0.2)
        assert len(ticks) == count  # closed: no more ticks

    asyncio.run(body())


def test_the_watchdog_a_wait_armed_is_taken_down_once_nobody_waits() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        pool = AsyncPool("postgresql://h/db", driver=FakeAsyncAdapter(), min_size=1,
                         max_size=1, timeout=30, housekeeping_interval=0.05)
        async with pool:
            held = await pool.acquire()
            waiter = asyncio.ensure_future(pool.acquire())
            await asyncio.sleep(0.01)
            assert pool._watchdog is not None  # someone waits: their deadline is watched
            await pool.release(held)
            await pool.release(await waiter)
            await eventually(lambda: pool._watchdog is None, what="the watchdog taken down")
            await asyncio.sleep(0)
            assert _live_timers(loop) == []
            # Waiting again arms it again, and the deadline still holds.
            held = await pool.acquire()
            try:
                started = time.monotonic()
                try:
                    await pool.acquire(timeout=0.1)
                except Exception as exc:
                    assert type(exc).__name__ == "PoolTimeout"
                else:  # pragma: no cover - a failure
                    raise AssertionError("the second acquire did not time out")
                assert 0.09 <= time.monotonic() - started < 1
            finally:
                await pool.release(held)

    asyncio.run(body())


def test_a_forgotten_pool_stops_its_ticks_and_is_collected() -> None:
    async def body() -> None:
        pool = AsyncPool("postgresql://h/db", driver=FakeAsyncAdapter(), min_size=0,
                         housekeeping_interval=0.02)
        await pool.open()
        tick = pool._housekeeper
        assert tick is not None and not tick.cancelled
        del pool
        gc.collect()
        await eventually(lambda: tick.cancelled, what="the tick stopped")

    asyncio.run(body())


def test_a_tick_whose_loop_closed_is_dropped_and_others_keep_ticking() -> None:
    ran: list[str] = []
    dead = asyncio.new_event_loop()
    gone = _ticker.every(dead, 0.01, lambda: ran.append("dead") or True)
    dead.close()

    async def body() -> None:
        live = _ticker.every(asyncio.get_running_loop(), 0.01,
                             lambda: ran.append("live") or True)
        try:
            await eventually(lambda: gone.cancelled, what="the closed loop's tick dropped")
            await eventually(lambda: ran.count("live") >= 3, what="the live tick going on")
        finally:
            live.cancel()

    asyncio.run(body())
    assert "dead" not in ran


def test_a_busy_loop_gets_one_pending_tick_not_a_pile() -> None:
    ran: list[float] = []

    async def body() -> None:
        tick = _ticker.every(asyncio.get_running_loop(), 0.005, lambda: ran.append(1) or True)
        try:
            time.sleep(0.2)  # the loop is blocked for 40 intervals
            await asyncio.sleep(0.001)
            assert len(ran) == 1
        finally:
            tick.cancel()

    asyncio.run(body())
