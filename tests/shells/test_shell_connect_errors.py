"""Both shells on the fake driver: rejected connects, slow callbacks, odd hooks, overruns."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import pytest
from fakes import Gate
from harness import Harness, both, eventually, run

from pgmarina import PoolConnectError, PoolTimeout, unwrap


class Rejected(Exception):
    """What the fake driver raises for a wrong password."""


def _reject(dsn: str | None, kwargs: Mapping[str, Any]) -> BaseException:
    return Rejected('FATAL:  password authentication failed for user "app"')


def _rejecting(h: Harness) -> None:
    """Make every connect fail the way a wrong password does, until ``heal()``."""
    h.fake.connect_error = _reject
    h.fake.is_permanent = lambda exc: isinstance(exc, Rejected)  # type: ignore[method-assign]
    h.fake.fail_connects(None)


class Boom(BaseException):
    """A hook's BaseException that is neither a cancellation nor an exit."""


# ---------------------------------------------------------------------------
# rejections


@both
def test_a_rejected_connect_fails_the_waiting_acquire_at_once_not_after_fail_fast_after(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        _rejecting(h)
        h.fake.connect_gate = gate = Gate()
        await h.open(wait=False)
        start = time.monotonic()
        waiting = h.spawn("acquire", timeout=10)
        await eventually(lambda: h.stats().waiting == 1, what="the caller queues")
        gate.set()
        with pytest.raises(PoolConnectError) as info:
            await waiting
        assert time.monotonic() - start < 1.0
        assert "password authentication failed" in str(info.value)
        assert isinstance(info.value.__cause__, Rejected)
        # and the next caller is refused at once, without a connect of its own
        start = time.monotonic()
        with pytest.raises(PoolConnectError):
            await h.acquire(timeout=10)
        assert time.monotonic() - start < 0.2
        s = h.stats()
        assert (s.waiting, s.timeouts, s.connecting) == (0, 0, 1)

    run(kind, body, min_size=0, fail_fast_after=5.0)


@both
def test_open_with_wait_raises_a_rejection_at_once_and_closes_the_pool(kind: str) -> None:
    async def body(h: Harness) -> None:
        _rejecting(h)
        start = time.monotonic()
        with pytest.raises(PoolConnectError) as info:
            await h.open(wait=True)
        assert time.monotonic() - start < 0.5
        assert "rejected" in str(info.value)
        assert isinstance(info.value.__cause__, Rejected)
        assert h.pool.closed

    run(kind, body, fail_fast_after=5.0, timeout=10)


@both
def test_a_pool_rejected_by_the_server_recovers_within_backoff_max_once_it_is_let_in(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        _rejecting(h)
        await h.open(wait=False)
        with pytest.raises(PoolConnectError):
            await h.acquire()
        # nobody asks any more, but the pool keeps trying
        await eventually(lambda: h.stats().connections_failed >= 2, what="a retry")
        failed = h.stats().connections_failed
        h.fake.heal()
        waited = await eventually(lambda: h.stats().idle == 1, what="recovery", timeout=2)
        assert waited < 0.5
        lease = await h.acquire()
        await h.release(lease)
        # the probe retried at about backoff_max, not in a tight loop
        assert h.stats().connections_failed - failed <= 3

    run(kind, body, min_size=0, backoff_max=0.2)


@both
def test_a_lasting_rejection_is_one_warning_and_its_retries_are_debug_lines(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(h: Harness) -> None:
        _rejecting(h)
        await h.open(wait=False)
        await eventually(lambda: h.stats().connections_failed >= 4, what="retries")
        lines = [r for r in caplog.records if "connect failed" in r.getMessage()]
        warnings = [r for r in lines if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "the server rejected it, so callers fail at once" in warnings[0].getMessage()
        assert len(lines) - 1 >= 3 and all(r.levelno == logging.DEBUG for r in lines[1:])

    caplog.set_level(logging.DEBUG, logger="pgmarina")
    run(kind, body, backoff_max=0.05)


# ---------------------------------------------------------------------------
# reconnect_failed off the critical path


@both
def test_a_slow_reconnect_failed_callback_does_not_delay_reconnection(kind: str) -> None:
    # The defect: the callback ran inside the pool's only connect loop, so a
    # callback that took 20 s kept the pool failing after the server was back.
    release = Gate()
    told: list[float] = []

    def slow(pool: Any) -> None:
        told.append(time.monotonic())
        release.wait(10)

    async def slow_async(pool: Any) -> None:
        told.append(time.monotonic())
        await release.wait_async()

    async def body(h: Harness) -> None:
        try:
            h.fake.fail_connects(None)
            await h.open(wait=False)
            await eventually(lambda: told, what="reconnect_failed called")
            h.fake.heal()
            waited = await eventually(lambda: h.stats().idle == 1, what="recovery", timeout=3)
            assert waited < 0.5
            lease = await h.acquire(timeout=1)
            await h.release(lease)
            assert len(told) == 1 and not release.is_set()
        finally:
            release.set()

    callback = slow_async if kind == "async" else slow
    run(kind, body, reconnect_timeout=0.05, backoff_max=0.05, reconnect_failed=callback)


# ---------------------------------------------------------------------------
# hooks that raise BaseException


@both
def test_a_configure_raising_a_base_exception_fails_only_that_connect(kind: str) -> None:
    # The defect (thread pool): the worker thread died and the entry stayed
    # "connecting" for ever; with max_size=1 every acquire then timed out.
    calls: list[Any] = []

    def configure(conn: Any) -> None:
        calls.append(conn)
        if len(calls) == 1:
            raise Boom("configure raised a BaseException")

    async def configure_async(conn: Any) -> None:
        configure(conn)

    async def body(h: Harness) -> None:
        await h.open(wait=True)
        first, second = h.fake.connections
        assert first.terminated
        lease = await h.acquire(timeout=1)
        assert unwrap(lease) is second
        await h.release(lease)
        s = h.stats()
        assert (s.connections_failed, s.connections_opened, s.connecting) == (1, 1, 0)
        assert "0 connecting" in repr(h.pool)

    run(
        kind,
        body,
        min_size=1,
        max_size=1,
        timeout=2,
        housekeeping_interval=60,
        configure=configure_async if kind == "async" else configure,
    )


# ---------------------------------------------------------------------------
# connect_timeout


def test_async_a_connect_past_connect_timeout_says_what_timed_out_and_after_how_long() -> None:
    # The defect: the error was an empty TimeoutError().
    async def body(h: Harness) -> None:
        h.fake.connect_gate = Gate()
        await h.open(wait=False)
        with pytest.raises(PoolTimeout) as info:
            await h.acquire(timeout=0.3)
        assert "connect (and configure) timed out after 0.05s" in str(info.value)
        cause = info.value.__cause__
        assert isinstance(cause, TimeoutError)
        assert str(cause) == "connect (and configure) timed out after 0.05s"

    run("async", body, min_size=0, connect_timeout=0.05)


def test_sync_configure_is_cut_off_past_connect_timeout(caplog: pytest.LogCaptureFixture) -> None:
    # The defect: connect_timeout did not bound a sync configure at all.
    cut = Gate()

    def configure(conn: Any) -> None:
        if not cut.wait(10):  # the first call hangs until the pool cuts it off
            raise AssertionError("configure was never cut off")
        if conn.closed:
            raise ConnectionResetError("cut off")

    def interrupt(conn: Any) -> None:  # what shutting the socket down does to a real one
        conn.break_()
        cut.set()

    async def body(h: Harness) -> None:
        h.fake.interrupt = interrupt  # type: ignore[method-assign]
        start = time.monotonic()
        await h.open(wait=True)
        assert time.monotonic() - start < 1.5
        first, second = h.fake.connections
        assert first.terminated and not second.closed
        assert h.stats().connections_failed == 1
        assert any(
            "connect (and configure) timed out after 0.2s" in r.getMessage()
            for r in caplog.records
        )

    caplog.set_level(logging.WARNING, logger="pgmarina")
    run("sync", body, connect_timeout=0.2, configure=configure, timeout=5)


@both
def test_open_with_wait_returns_within_its_timeout_while_a_connect_hangs(kind: str) -> None:
    # The defect (thread pool): after the timeout, closing the pool waited for
    # the worker stuck in the connect, so open() returned seconds late.
    async def body(h: Harness) -> None:
        h.fake.connect_gate = Gate()
        start = time.monotonic()
        with pytest.raises(PoolTimeout):
            await h.call("open", wait=True, timeout=0.3)
        assert time.monotonic() - start < 0.8
        assert h.pool.closed
        h.fake.connect_gate.set()
        if h.is_async:
            await asyncio.sleep(0.05)
            assert h.fake.connections == []  # the connect task was cancelled
        else:
            # the connect that comes back late is dropped, not kept or leaked
            await eventually(lambda: h.fake.connections, what="the late connect")
            await eventually(lambda: h.fake.connections[0].closed, what="dropped")
        await eventually(lambda: h.stats().size == 0, what="nothing left")

    run(kind, body, connect_timeout=5)
