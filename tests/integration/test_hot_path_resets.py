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

import asyncpg
import pytest

from helpers import eventually
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


# ---------------------------------------------------------------------------
# reset="full" under contention: the releasing task runs the reset itself
# (AsyncPool._reset_in_line), through the driver's own reset query.  A
# connection class whose reset query sleeps or fails shows what happens when
# that reset does not end well.


class _ResetQuery(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose session reset runs ``reset_query``."""

    reset_query = "SELECT 1"

    def get_reset_query(self) -> str:
        return self.reset_query


def _with_reset(query: str) -> type[_ResetQuery]:
    return type("WithReset", (_ResetQuery,), {"reset_query": query})


@run_async
async def test_a_full_reset_awaited_in_line_keeps_the_connection_and_cleans_it(pg: Any) -> None:
    """With nothing idle the caller runs the reset itself: the next borrower finds the
    same server session, its settings reset."""
    async with AsyncPool(pg.dsn, min_size=1, max_size=1, reset="full") as pool:
        me = asyncio.current_task()
        for _ in range(5):
            async with pool.connection() as conn:
                pid = conn.get_server_pid()
                await conn.execute("SET application_name = 'dirty'")
            assert pool.stats().idle == 1  # checked in before the block's end returned
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid
            assert await conn.fetchval("SHOW application_name") == ""
            await conn.execute("SET application_name = 'dirty'")
        async with pool.connection() as conn:
            assert await conn.fetchval("SHOW application_name") == ""
        s = pool.stats()
        assert (s.resets, s.connections_opened, s.connections_lost) == (7, 1, 0)
        assert asyncio.current_task() is me and len(pool._tasks) <= 1  # no task per reset


@pytest.mark.parametrize(
    ("reset_query", "options", "said"),
    [
        ("SELECT pg_sleep(30)", {"reset_timeout": 0.3}, "timed out after 0.3s (reset_timeout)"),
        ("SELECT 1/0", {}, "division by zero"),
    ],
    ids=["overrun", "error"],
)
@run_async
async def test_an_in_line_full_reset_that_fails_discards_the_connection_and_logs_why(
    pg: Any,
    caplog: pytest.LogCaptureFixture,
    reset_query: str,
    options: dict[str, Any],
    said: str,
) -> None:
    """A reset that overruns ``reset_timeout`` is cut off by the watch; one that fails
    fails: either way the block ends without an error, the connection is replaced, and
    the log says why."""
    caplog.set_level(logging.WARNING, logger="pgmarina")
    async with AsyncPool(
        pg.dsn, min_size=1, max_size=1, reset="full", connection_class=_with_reset(reset_query),
        **options,
    ) as pool:
        t0 = time.monotonic()
        async with pool.connection() as conn:
            pid = conn.get_server_pid()
        waited = time.monotonic() - t0
        assert waited < 1.5
        if options:  # the block's end waited for the watch
            assert waited >= 0.25
        async with pool.connection() as conn:
            assert conn.get_server_pid() != pid
            assert await conn.fetchval("SELECT 1") == 1
            s = pool.stats()
            assert (s.connections_lost, s.connections_opened, s.resets) == (0, 2, 1)
    lines = [r.getMessage() for r in caplog.records if "reset of connection" in r.getMessage()]
    assert lines and said in lines[0], lines


@run_async
async def test_a_caller_cancelled_in_its_in_line_full_reset_loses_no_connection(pg: Any) -> None:
    slow = _with_reset("SELECT pg_sleep(30)")
    async with AsyncPool(
        pg.dsn, min_size=1, max_size=1, reset="full", connection_class=slow
    ) as pool:
        entered = asyncio.Event()

        async def borrower() -> None:
            async with pool.connection():
                entered.set()

        task = asyncio.create_task(borrower())
        await entered.wait()
        await asyncio.sleep(0.1)  # now in the reset
        assert pool.stats().in_use == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        s = pool.stats()
        # Its state unknown, the connection is dropped and replaced: none leased, none lost.
        assert (s.in_use, s.connections_lost) == (0, 0)
        await eventually(lambda: pool.stats().idle == 1, what="the replacement")
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1
        assert pool.stats().connections_opened == 2


@run_async
async def test_with_few_users_the_full_reset_runs_behind_the_caller_else_in_line(
    pg: Any,
) -> None:
    """A release resets in a task of its own only while at most two callers use the
    pool (its caller goes on with an idle connection); with more, the caller runs it."""
    slow = _with_reset("SELECT pg_sleep(0.4)")
    async with AsyncPool(
        pg.dsn, min_size=4, max_size=4, reset="full", connection_class=slow
    ) as pool:
        conn = await pool.acquire()
        t0 = time.monotonic()
        await pool.release(conn)  # alone: behind the caller
        async with pool.connection() as other:  # served by another, idle connection
            assert other is not conn
        assert time.monotonic() - t0 < 0.3
        await eventually(  # (its task counted out too: one loop pass after its check-in)
            lambda: pool.stats().idle == 4 and pool._resets_behind == 0,
            what="the reset behind the caller",
        )
        held = [await pool.acquire() for _ in range(3)]  # three users
        t0 = time.monotonic()
        await pool.release(held.pop())  # the caller waits for its reset
        assert time.monotonic() - t0 >= 0.35
        for conn in held:
            await pool.release(conn)
        s = pool.stats()
        assert (s.connections_opened, s.connections_lost) == (4, 0)


@run_async
async def test_an_asyncpg_query_logger_still_sees_the_full_reset_and_the_rollback(pg: Any) -> None:
    """The adapter sends asyncpg's reset query past Connection.execute's frame, except when
    the connection has query loggers, which must see every query."""
    seen: list[str] = []
    async with AsyncPool(pg.dsn, min_size=1, max_size=1, reset="full") as pool:
        async with pool.connection() as conn:
            conn.add_query_logger(lambda record: seen.append(record.query))
            await conn.execute("BEGIN")
        await eventually(lambda: len(seen) >= 2, what="the loggers called")  # (call_soon)
        assert seen[0] == "BEGIN"
        assert seen[1].startswith("ROLLBACK;") and "RESET ALL" in seen[1], seen
        async with pool.connection() as conn:
            assert not conn.is_in_transaction()
    assert pool.stats().resets == 2
