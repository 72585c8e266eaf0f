"""Both shells: what they gained for the psycopg_pool façade, on the fake drivers.

``close(wait=False)``, closing a retired connection in the caller (``_close_inline``),
skipping the reset of a connection that will be closed anyway (``core.keeps``), the
null pool's ``max_idle=0``, a per-pool logger (``_log``), and ``AsyncPool._start()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from harness import Harness, both, eventually, run

from pgmarina import AsyncPool, Pool, PoolClosed, unwrap


@both
def test_close_without_waiting_returns_at_once_and_closes_a_lease_when_it_comes_back(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        start = time.monotonic()
        await h.call("close", timeout=5, wait=False)
        assert time.monotonic() - start < 1.0
        assert h.pool.closed
        assert not raw.closed and not raw.terminated  # its borrower still has it
        assert raw.execute("SELECT 1") == "ok: SELECT 1"
        with pytest.raises(PoolClosed):
            await h.acquire(timeout=0)
        await h.release(lease)
        await eventually(lambda: raw.closed, what="closed when it came back")
        s = h.stats()
        assert (s.size, s.in_use, s.idle) == (0, 0, 0)

    run(kind, body, min_size=2)


class _InlineSync(Pool):
    _close_inline = True


class _InlineAsync(AsyncPool):
    _close_inline = True


def _inline(kind: str, **settings: Any) -> Harness:
    h = Harness(kind, **settings)
    cls = _InlineAsync if kind == "async" else _InlineSync
    h.pool = cls(None, driver=h.fake, **{**_QUIET, **settings})
    return h


_QUIET: dict[str, Any] = {
    "min_size": 1, "max_size": 4, "timeout": 2.0, "check_window": None, "keepalive": None,
    "max_lifetime": None, "max_idle": None, "fail_fast_after": None,
}  # fmt: skip


@both
def test_a_pool_closing_inline_closes_a_retired_connection_before_release_returns(
    kind: str,
) -> None:
    async def main() -> None:
        h = _inline(kind, min_size=0, max_idle=0)
        try:
            await h.open()
            lease = await h.acquire()
            raw = unwrap(lease)
            await h.release(lease)  # nobody waits: retired, and closed right here
            assert raw.closed
            assert h.stats().connections_closed == 1
        finally:
            await h.cleanup()

    asyncio.run(main())


@both
def test_a_pool_closing_in_the_background_closes_a_retired_connection_soon(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        await h.release(lease)
        await eventually(lambda: raw.closed, what="closed in the background")
        assert h.stats().size == 0

    run(kind, body, min_size=0, max_idle=0)


@both
def test_a_pool_with_max_idle_zero_keeps_no_connection_above_min_size(kind: str) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        a, b, c = [await h.acquire() for _ in range(3)]
        for lease in (a, b, c):
            await h.release(lease)
        await eventually(lambda: h.stats().size == 1, what="back to min_size")
        assert h.stats().idle == 1

    run(kind, body, min_size=1, max_idle=0)


@both
def test_the_reset_of_a_connection_that_will_be_closed_is_skipped(kind: str) -> None:
    """A connection given back after ``expire()`` (or past its lifetime, or to a closing
    pool) is closed without its rollback or reset hook: the round trip would be for
    nothing."""
    resets: list[Any] = []

    def reset(conn: Any) -> Any:
        resets.append(conn)
        if kind == "async":
            return asyncio.sleep(0)
        return None

    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        raw.begin()
        await h.call("expire")
        mark = h.fake.mark()
        await h.release(lease)
        assert resets == []
        assert "rollback" not in h.fake.io_calls_since(mark)
        await eventually(lambda: raw.closed, what="closed")

    run(kind, body, reset=reset)


@both
def test_a_connection_kept_after_release_is_still_reset(kind: str) -> None:
    resets: list[Any] = []

    def reset(conn: Any) -> Any:
        resets.append(conn)
        if kind == "async":
            return asyncio.sleep(0)
        return None

    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        raw.begin()
        await h.release(lease)
        await eventually(lambda: resets == [raw], what="reset")
        assert h.fake.count("rollback", raw) == 1

    run(kind, body, reset=reset)


@both
def test_a_pool_logs_on_its_own_logger(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    mine = logging.getLogger("pgmarina.tests.own")
    shell: type[Any] = AsyncPool if kind == "async" else Pool
    cls = type("Logged", (shell,), {"_log": mine})

    async def main() -> None:
        h = Harness(kind)
        h.fake.fail_connects(None)
        h.pool = cls(None, driver=h.fake, **{**_QUIET, "min_size": 1})
        try:
            with caplog.at_level(logging.WARNING, logger="pgmarina.tests.own"):
                await h.open(wait=False)
                await eventually(lambda: caplog.records, what="a connect failure logged")
            assert {r.name for r in caplog.records} == {"pgmarina.tests.own"}
            assert "connect failed" in caplog.records[0].getMessage()
        finally:
            await h.cleanup()

    asyncio.run(main())


def test_an_async_pool_starts_without_an_await() -> None:
    """``_start()`` is ``open()`` up to its wait: the async façade opens in its constructor."""
    from fakes import FakeAsyncAdapter

    async def main() -> None:
        fake = FakeAsyncAdapter()
        pool = AsyncPool(None, driver=fake, **{**_QUIET, "min_size": 2})
        pool._start()
        assert pool._opened
        await pool.wait(2)
        assert pool.stats().size == 2
        await pool.close()
        with pytest.raises(PoolClosed):
            pool._start()

    asyncio.run(main())
