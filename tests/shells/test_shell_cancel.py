"""AsyncPool: cancellation never loses a connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes import Gate
from harness import Harness, eventually, run

from pgmarina import unwrap


def test_a_cancelled_waiter_leaves_the_queue_and_loses_no_connection() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        task = asyncio.ensure_future(h.pool.acquire(timeout=5))
        await eventually(lambda: h.stats().waiting == 1, what="queued")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert h.stats().waiting == 0
        await h.release(held)
        s = h.stats()
        assert (s.idle, s.in_use, s.size, s.acquires) == (1, 0, 1, 1)
        lease = await h.acquire(timeout=0)
        assert unwrap(lease) is h.fake.connections[0]

    run("async", body, max_size=1)


def test_a_waiter_abandoned_by_wait_for_leaves_the_queue() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(h.pool.acquire(timeout=5), 0.05)
        assert h.stats().waiting == 0
        await h.release(held)
        assert h.stats().idle == 1

    run("async", body, max_size=1)


def test_a_waiter_cancelled_just_as_it_is_handed_a_connection_gives_it_back() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        task = asyncio.ensure_future(h.pool.acquire(timeout=5))
        await eventually(lambda: h.stats().waiting == 1, what="queued")
        # Same loop iteration: the release hands the connection to the waiter's
        # future, then the waiting task is cancelled before it can run.
        await h.pool.release(held)  # a clean release does not yield to the loop
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        s = h.stats()
        assert (s.idle, s.in_use, s.waiting, s.size) == (1, 0, 0, 1)
        assert s.acquires == 2  # the hand-off counted; the connection came back
        lease = await h.acquire(timeout=0)
        assert unwrap(lease) is h.fake.connections[0]
        await h.release(lease)
        assert h.fake.count("terminate") == 0

    run("async", body, max_size=1)


def test_a_cancelled_hand_off_goes_to_the_next_waiter() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        first = asyncio.ensure_future(h.pool.acquire(timeout=5))
        await eventually(lambda: h.stats().waiting == 1, what="first queued")
        second = asyncio.ensure_future(h.pool.acquire(timeout=5))
        await eventually(lambda: h.stats().waiting == 2, what="second queued")
        await h.pool.release(held)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        lease = await asyncio.wait_for(second, 1)
        assert unwrap(lease) is h.fake.connections[0]
        s = h.stats()
        assert (s.in_use, s.waiting, s.idle) == (1, 0, 0)
        await h.release(lease)

    run("async", body, max_size=1)


def test_a_borrower_cancelled_during_a_slow_check_leaves_it_to_finish_and_keep_it() -> None:
    """A caller that gives up must not condemn a healthy connection (Reliability defect 1):
    the check goes on without it, and a connection that passes is kept."""

    async def body(h: Harness) -> None:
        await h.open()
        first = h.fake.connections[0]
        h.fake.hang["ping"] = gate = Gate()
        task = asyncio.ensure_future(h.pool.acquire(timeout=5))
        await eventually(lambda: h.fake.count("ping") == 1, what="check started")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not first.terminated
        assert h.stats().in_use == 1  # still being checked
        gate.set()
        await eventually(lambda: h.stats().idle == 1, what="the check passes")
        s = h.stats()
        assert (s.size, s.in_use, s.connections_opened, s.checks_failed) == (1, 0, 1, 0)
        assert not first.terminated
        lease = await h.acquire(timeout=1)
        assert unwrap(lease) is first
        await h.release(lease)

    run("async", body, check_window=0)


def test_a_failed_checkout_check_replaces_the_connection_and_still_serves_the_caller() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        first = h.fake.connections[0]
        h.fake.fail_io("ping", ConnectionResetError("gone"), times=1)
        lease = await h.acquire(timeout=2)
        assert unwrap(lease) is not first
        assert first.terminated
        s = h.stats()
        assert (s.checks_failed, s.connections_lost, s.in_use) == (1, 1, 1)
        await h.release(lease)

    run("async", body, check_window=0)


def test_a_releaser_cancelled_during_a_slow_reset_discards_the_connection() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        h.fake.hang["rollback"] = gate = Gate()
        lease.begin()
        task = asyncio.ensure_future(h.pool.release(lease))  # no idle: the caller waits
        await eventually(lambda: h.fake.count("rollback") == 1, what="reset started")
        assert h.stats().in_use == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert raw.terminated
        gate.set()
        await eventually(lambda: h.stats().idle == 1, what="replacement")
        s = h.stats()
        assert (s.size, s.in_use, s.connections_opened) == (1, 0, 2)
        assert unwrap(await h.acquire()) is not raw

    run("async", body, max_size=1)


def test_a_connect_whose_waiter_is_cancelled_still_completes_and_goes_idle() -> None:
    async def body(h: Harness) -> None:
        h.fake.connect_gate = gate = Gate()
        await h.open(wait=False)
        task = asyncio.ensure_future(h.pool.acquire(timeout=5))
        await eventually(lambda: h.fake.in_flight == 1, what="connect started")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert h.stats().waiting == 0
        gate.set()
        await eventually(lambda: h.stats().idle == 1, what="idle connection")
        s = h.stats()
        assert (s.connecting, s.size, s.connections_opened) == (0, 1, 1)
        assert not h.fake.connections[0].closed

    run("async", body, min_size=0)


def test_cancelling_a_connection_block_returns_the_connection() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        entered = asyncio.Event()

        async def borrow() -> None:
            async with h.pool.connection() as conn:
                conn.begin()
                entered.set()
                await asyncio.sleep(10)

        task = asyncio.ensure_future(borrow())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: h.stats().idle == 1, what="connection back")
        assert h.fake.count("rollback") == 1
        assert h.stats().in_use == 0

    run("async", body, max_size=1)


def test_waiters_with_the_pool_timeout_and_their_own_each_time_out_at_their_deadline() -> None:
    """The pool's own timeout is kept in the queue's order and the others are listed
    (AsyncPool._on_watchdog): each waiter fails at its own deadline, in whatever order
    they queued, and those served before it are not failed."""

    async def body(h: Harness) -> None:
        await h.open()
        held = await h.acquire()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        failed_at: dict[str, float] = {}

        async def wait(name: str, **timeout: float) -> Any:
            try:
                return await h.pool.acquire(**timeout)
            except Exception as exc:
                failed_at[name] = loop.time() - t0
                assert "no connection available" in str(exc)
                return None

        longer = asyncio.ensure_future(wait("longer", timeout=1.0))
        first = asyncio.ensure_future(wait("first"))  # the pool's 0.3 s
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(wait("second"))  # the pool's, 0.1 s later
        shorter = asyncio.ensure_future(wait("shorter", timeout=0.05))
        await eventually(lambda: h.stats().waiting == 4, what="queued")
        await first
        served = asyncio.ensure_future(wait("served"))  # the pool's, from 0.3 s
        await asyncio.gather(second, shorter)
        assert sorted(failed_at) == ["first", "second", "shorter"]
        assert 0.13 <= failed_at["shorter"] < 0.3
        assert 0.28 <= failed_at["first"] < 0.38
        assert 0.38 <= failed_at["second"] < 0.5
        await h.release(held)  # to the oldest waiter left: "longer"
        got = await longer
        assert got is not None and "longer" not in failed_at
        await h.release(got)
        got = await served  # queued after "second", still within its 0.3 s
        assert got is not None and "served" not in failed_at
        await h.release(got)
        s = h.stats()
        assert (s.timeouts, s.waiting, s.in_use, s.idle) == (3, 0, 0, 1)

    run("async", body, max_size=1, timeout=0.3)
