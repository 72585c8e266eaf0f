"""What a reset costs the event loop on AsyncPool's release path, on a real server.

Issue 9 measured ``reset="full"`` at 1.16x asyncpg's pool where a lean pool running
the same reset query reached 1.43x, and issue 10 the asyncpg façade with a no-op reset
coroutine behind ``AsyncPool(reset=None)``.  Two costs were the loop's own: every
full-reset release armed asyncpg's query timeout (a timer pushed on the loop's heap,
then cancelled), and every release in ``reset=<hook>`` mode with connections idle
started a task to run the hook, even one that does nothing.  The tests below guard
those, and that the one watch now bounding asyncpg's resets still bounds them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pgmarina import AsyncPool


def run_async(fn: Callable[..., Awaitable[Any]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def test(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))  # type: ignore[arg-type]

    return test


def count_timers(loop: asyncio.AbstractEventLoop) -> list[float]:
    """Record the delay of every timer armed on ``loop`` from now on (``call_later`` too)."""
    armed: list[float] = []
    call_at = loop.call_at

    def counting(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        armed.append(when - loop.time())
        return call_at(when, *args, **kwargs)

    loop.call_at = counting  # type: ignore[method-assign]
    return armed


@run_async
async def test_a_full_reset_release_arms_no_timer_of_its_own(pg: Any) -> None:
    """Regression (issue 9): each full-reset release armed asyncpg's query timeout, about
    a tenth of the release's cost; one watch per pool now bounds every reset."""
    async with AsyncPool(pg.dsn, min_size=1, max_size=1, reset="full") as pool:
        armed = count_timers(asyncio.get_running_loop())
        for _ in range(50):
            async with pool.connection() as conn:
                await conn.execute("SET statement_timeout = 1234")
        # The watch (5 s, once) and at most a housekeeping tick's sleep: not one per release.
        assert len([d for d in armed if d > 2.0]) <= 2, armed
        assert len(armed) < 5, armed
        async with pool.connection() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "0"  # the reset ran
        assert pool.stats().resets == 51


@run_async
async def test_a_no_op_reset_hook_runs_in_the_releasing_task_without_a_task_of_its_own(
    pg: Any,
) -> None:
    """Regression (issue 10): with connections idle, every release in ``reset=<hook>``
    mode started a task to run the hook, even a no-op one (asyncpg's way to turn the
    reset off), a third of the cycle; a hook that ends without waiting now runs in the
    releasing task."""
    ran_in: list[asyncio.Task[Any] | None] = []

    async def no_op(conn: Any) -> None:
        ran_in.append(asyncio.current_task())

    async with AsyncPool(pg.dsn, min_size=3, max_size=3, reset=no_op) as pool:
        me = asyncio.current_task()
        for _ in range(20):
            async with pool.connection() as conn:
                await conn.fetchval("SELECT 1")
            conn = await pool.acquire()
            await pool.release(conn)
        assert ran_in == [me] * 40
        s = pool.stats()
        assert (s.resets, s.idle, s.in_use, s.connections_opened) == (40, 3, 0, 3)


@run_async
async def test_a_reset_hook_that_waits_ends_before_its_connection_is_reused(pg: Any) -> None:
    seen: list[str] = []

    async def hook(conn: Any) -> None:
        await conn.execute("RESET statement_timeout")
        seen.append(await conn.fetchval("SHOW statement_timeout"))

    for min_size in (1, 2):  # the caller waits for the reset / it runs in the background
        seen.clear()
        async with AsyncPool(pg.dsn, min_size=min_size, max_size=min_size, reset=hook) as pool:
            for _ in range(6):
                async with pool.connection() as conn:
                    assert await conn.fetchval("SHOW statement_timeout") == "0"
                    await conn.execute("SET statement_timeout = 4321")
            for _ in range(100):
                if len(seen) == 6 and pool.stats().idle == min_size:
                    break
                await asyncio.sleep(0.01)
            assert seen == ["0"] * 6
            assert pool.stats().connections_opened == min_size


@run_async
async def test_a_reset_hook_that_fails_at_once_discards_the_connection_and_says_so(
    pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(conn: Any) -> None:  # fails before it could wait
        raise RuntimeError("the hook broke")

    async with AsyncPool(pg.dsn, min_size=1, max_size=1, reset=hook) as pool:
        async with pool.connection() as conn:
            pid = conn.get_server_pid()
        async with pool.connection() as conn:
            assert conn.get_server_pid() != pid
            s = pool.stats()
            assert (s.resets, s.connections_opened, s.connections_lost) == (1, 2, 0)
    lines = [r.getMessage() for r in caplog.records if "reset of connection" in r.getMessage()]
    assert lines and "the hook broke" in lines[0], lines


@pytest.mark.slow
@run_async
async def test_a_reset_that_overruns_reset_timeout_is_cut_off_by_the_watch(
    pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch that replaced asyncpg's per-reset timer still bounds a reset: the
    connection is terminated at ``reset_timeout``, reported as a timeout, and replaced."""
    caplog.set_level(logging.WARNING, logger="pgmarina")

    async def hook(conn: Any) -> None:
        await conn.execute("SELECT pg_sleep(30)")

    async with AsyncPool(pg.dsn, min_size=1, max_size=1, reset=hook, reset_timeout=0.3) as pool:
        conn = await pool.acquire()
        pid = conn.get_server_pid()
        t0 = time.monotonic()
        await pool.release(conn)  # the only connection: the caller waits for its reset
        assert 0.25 <= time.monotonic() - t0 < 1.5
        async with pool.connection() as conn:
            assert conn.get_server_pid() != pid
            assert await conn.fetchval("SELECT 1") == 1
        s = pool.stats()
        assert (s.connections_lost, s.connections_opened, s.resets) == (0, 2, 2)
    lines = [r.getMessage() for r in caplog.records if "reset of connection" in r.getMessage()]
    assert lines and "timed out after 0.3s (reset_timeout)" in lines[0], lines
