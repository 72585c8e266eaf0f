"""Harness for the shell tests: one harness that drives either shell.

Test bodies are ``async def body(h)`` coroutines run with ``asyncio.run``.
``h.call("acquire", timeout=1)`` awaits the AsyncPool method, or runs the
thread Pool's blocking method in a worker thread (so the event loop, and any
other waiter the test started with ``h.spawn``, keeps going).  Shared bodies
thus test both shells with the same words.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fakes import FakeAsyncAdapter, FakeSyncAdapter

from pgmarina import AsyncPool, Pool

KINDS = ["async", "sync"]

#: Decorator: run the test once per shell, with ``kind`` = ``"async"`` / ``"sync"``.
both = pytest.mark.parametrize("kind", KINDS)

#: Settings that keep time-driven behaviour out of a test unless it asks.
QUIET: dict[str, Any] = {
    "min_size": 1,
    "max_size": 4,
    "timeout": 2.0,
    "check_window": None,
    "keepalive": None,
    "max_lifetime": None,
    "max_idle": None,
    "fail_fast_after": None,
}


def make_fake(kind: str) -> FakeAsyncAdapter | FakeSyncAdapter:
    return FakeAsyncAdapter() if kind == "async" else FakeSyncAdapter()


def pool_class(kind: str) -> type[Any]:
    return AsyncPool if kind == "async" else Pool


class Harness:
    """A pool of either kind on a fake driver, with awaitable operations."""

    def __init__(self, kind: str, dsn: str | None = None, **kwargs: Any) -> None:
        self.kind = kind
        self.fake = make_fake(kind)
        settings = {**QUIET, **kwargs}
        self.pool = pool_class(kind)(dsn, driver=self.fake, **settings)
        self._executor: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=40, thread_name_prefix="harness")
            if kind == "sync"
            else None
        )

    @property
    def is_async(self) -> bool:
        return self.kind == "async"

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a pool method: awaited (async pool) or in a worker thread (sync pool)."""
        fn = getattr(self.pool, method)
        if self._executor is None:
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def spawn(self, method: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Start ``call(method, ...)`` in the background."""
        return asyncio.ensure_future(self.call(method, *args, **kwargs))

    async def open(self, wait: bool = True) -> None:
        await self.call("open", wait=wait)

    async def acquire(self, **kwargs: Any) -> Any:
        return await self.call("acquire", **kwargs)

    async def release(self, conn: Any) -> None:
        await self.call("release", conn)

    def stats(self) -> Any:
        return self.pool.stats()

    async def cleanup(self) -> None:
        fake = self.fake
        if fake.connect_gate is not None:
            fake.connect_gate.set()
        for gate in fake.hang.values():
            gate.set()
        fake.heal()
        try:
            await self.call("close", timeout=0)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)


async def eventually(
    predicate: Callable[[], Any], timeout: float = 2.0, what: str = "condition"
) -> float:
    """Poll ``predicate`` until true; return how long it took.  Fails after ``timeout``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.003)


def run(
    kind: str,
    body: Callable[[Harness], Awaitable[None]],
    dsn: str | None = None,
    **kwargs: Any,
) -> None:
    """Build a harness, run ``body(h)`` in a fresh event loop, always clean up."""

    async def main() -> None:
        h = Harness(kind, dsn, **kwargs)
        try:
            await body(h)
        finally:
            await h.cleanup()

    asyncio.run(main())
