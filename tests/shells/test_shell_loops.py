"""AsyncPool serves only the event loop that opened it, asyncio's own or another kind.

On asyncio's loops the pool asks the loop which thread runs it (no system
call); on other loops (uvloop) it asks asyncio for the running loop.  Both
must refuse a caller on any other loop, on the fast path as on the slow.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from fakes import FakeAsyncAdapter

from helpers import refused_elsewhere
from pgmarina import AsyncPool, PoolError

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")


def _pool() -> AsyncPool:
    return AsyncPool("postgresql://h/db", driver=FakeAsyncAdapter(), min_size=1, max_size=1)


def _home_loop(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> tuple[Any, threading.Thread]:
    loop = new_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def _on(loop: Any, coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(5)


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_a_pool_serves_its_own_loop_and_refuses_one_in_another_thread(kind: str) -> None:
    new_loop = asyncio.new_event_loop if kind == "asyncio" else uvloop.new_event_loop
    home, thread = _home_loop(new_loop)
    pool = _pool()
    try:
        _on(home, pool.open(wait=True))
        assert (pool._asyncio_loop is not None) == (kind == "asyncio")

        async def use() -> int:
            async with pool.connection():
                pass
            lease = await pool.acquire()
            await pool.release(lease)
            return pool.stats().acquires

        assert _on(home, use()) == 2

        refused_elsewhere(pool, pool.connection, new_loop)  # an idle connection waits: fast path
        assert pool.stats().idle == 1 and pool.stats().waiting == 0
    finally:
        _on(home, pool.close())
        home.call_soon_threadsafe(home.stop)
        thread.join(5)
        home.close()


def test_a_stopped_home_loop_refuses_a_new_loop_in_the_same_thread() -> None:
    pool = _pool()
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(pool.open(wait=True))

        async def later() -> None:
            with pytest.raises(PoolError, match="event loop"):
                async with pool.connection():
                    pass  # pragma: no cover - never entered

        second = asyncio.new_event_loop()
        try:
            second.run_until_complete(later())  # same thread, another loop
        finally:
            second.close()
        first.run_until_complete(pool.close())
    finally:
        first.close()
