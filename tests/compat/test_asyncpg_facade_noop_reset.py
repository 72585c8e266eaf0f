"""The asyncpg façade skips a ``reset`` coroutine whose body does nothing.

asyncpg's way to turn its reset off is ``reset=`` a coroutine that does
nothing (its ``reset=None`` means the default, full reset).  The façade
recognises one and runs the pool with ``reset="auto"``: a clean connection
goes straight back, a transaction left open is still rolled back, and any
other hook is still called on every release.  Against a real server.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import asyncpg
import pytest

from pgmarina.compat.asyncpg import _does_nothing, create_pool


async def _noop(conn: Any) -> None:
    pass


async def _documented(conn: Any) -> None:
    """Nothing to undo here."""


async def _returns_a_constant(conn: Any, *more: Any) -> int:
    return 1


async def _acts(conn: Any) -> None:
    await conn.execute("SELECT 1")


async def _no_argument() -> None:
    pass


def _sync(conn: Any) -> None:
    pass


async def _generator(conn: Any) -> Any:
    yield


class _Object:
    async def __call__(self, conn: Any) -> None:
        pass


@pytest.mark.parametrize("hook", [_noop, _documented, _returns_a_constant])
def test_does_nothing_recognises_empty_coroutines(hook: Any) -> None:
    assert _does_nothing(hook)


@pytest.mark.parametrize(
    "hook",
    [_acts, _no_argument, _sync, _generator, _Object(), functools.partial(_noop), None],
)
def test_does_nothing_leaves_every_other_hook_to_be_called(hook: Any) -> None:
    assert not _does_nothing(hook)


def test_a_noop_reset_is_no_reset_round_trip_on_a_clean_release(pg: Any) -> None:
    """Regression: a no-op ``reset`` coroutine was called and counted as a reset
    round trip (``stats().resets``) on every clean release."""

    async def main() -> None:
        async with create_pool(**pg.connect_kwargs(), min_size=1, max_size=1,
                               reset=_noop) as pool:
            for _ in range(5):
                async with pool.acquire() as conn:
                    assert await conn.fetchval("SELECT 1") == 1
            assert pool._pool.stats().resets == 0

    asyncio.run(main())


def test_a_noop_reset_still_rolls_back_a_transaction_left_open(pg: Any) -> None:
    async def main() -> None:
        async with create_pool(**pg.connect_kwargs(), min_size=1, max_size=1,
                               reset=_noop) as pool:
            conn = await pool.acquire()
            pid = conn.get_server_pid()
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int)")
            loop = asyncio.get_running_loop()
            seen: list[dict[str, Any]] = []
            loop.set_exception_handler(lambda _loop, context: seen.append(context))
            await pool.release(conn)
            async with pool.acquire() as again:
                assert again.get_server_pid() == pid  # the same connection, kept
                assert not again.is_in_transaction()
                assert await again.fetchval(
                    "SELECT count(*) FROM pg_class WHERE relname = 'left_open'"
                ) == 0
            assert pool._pool.stats().resets == 1
            # asyncpg's own words on a transaction left open, as before.
            assert any("active transaction" in str(c.get("message")) for c in seen)

    asyncio.run(main())


def test_a_reset_that_acts_is_still_called_on_every_release(pg: Any) -> None:
    async def main() -> None:
        calls: list[int] = []

        async def reset(conn: Any) -> None:
            calls.append(1)

        async with create_pool(**pg.connect_kwargs(), min_size=1, max_size=1,
                               reset=reset) as pool:
            for _ in range(3):
                async with pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
            assert len(calls) == 3

    asyncio.run(main())


def test_a_waiting_async_with_acquire_raises_asyncpgs_errors(pg: Any) -> None:
    """``async with pool.acquire()`` that has to wait (the façade's inline wait)
    times out with ``TimeoutError`` and fails with asyncpg's ``InterfaceError``
    when the pool closes under it, as a plain ``await pool.acquire()`` does."""

    async def main() -> None:
        pool = await create_pool(**pg.connect_kwargs(), min_size=1, max_size=1)
        held = await pool.acquire()
        with pytest.raises(asyncio.TimeoutError):
            async with pool.acquire(timeout=0.05):
                pass

        async def wait() -> None:
            async with pool.acquire():
                pass

        waiter = asyncio.ensure_future(wait())
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(pool.close())
        with pytest.raises(asyncpg.InterfaceError, match="pool is closing"):
            await waiter
        await pool.release(held)
        await closing

    asyncio.run(main())
