"""AsyncPool pieces the asyncpg façade stands on, on the fake driver.

* ``_return(..., timeout, peer=True)``: a release that waits for its reset as
  asyncpg's does (bounded by a per-call timeout, raising the reset's error,
  and leaving the connection to a fresh reset when the caller is cancelled);
* a custom reset that never waits costs no timer;
* ``_set_connect_args``: the next connects use new arguments;
* released-connection stand-ins (``stand_in``);
* ``terminate()`` right after a connection was retired;
* ``fail_fast_waiters`` and ``configure_fails_waiter``, on both shells.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fakes import Gate
from harness import Harness, both, eventually, run

from pgmarina import ConnectionReleasedError, PoolConnectError, reset_on_release, unwrap
from pgmarina._lease import set_con, stand_in


class _Gone(Exception):
    pass


def _gone(name: str, setting: bool) -> BaseException:
    return _Gone(f"{'set' if setting else 'use'} {name}")


def test_terminate_closes_a_retired_connection_whose_close_had_not_started() -> None:
    # The defect: terminate() cancelled the close task of a connection retired
    # in the same step (max_uses here), before it ran: that connection stayed
    # open, and was found unclosed by the garbage collector.
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        await h.release(lease)  # its last use: retired, its close task made
        h.pool.terminate()  # in the same step: the close task never starts
        assert raw.closed and raw.terminated
        assert h.stats().size == 0

    run("async", body, max_size=1, max_uses=1)


def test_a_peer_release_raises_the_reset_error_after_discarding_the_connection() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.begin()
        h.fake.fail_io("rollback", RuntimeError("rollback failed"), times=1)
        reset = h.pool._return(lease, None, None, True)
        assert reset is not None  # nothing else idle: the caller waits for it
        with pytest.raises(RuntimeError, match="rollback failed"):
            await reset
        assert raw.terminated
        await eventually(lambda: h.stats().idle == 1, what="replacement")
        assert unwrap(await h.acquire()) is not raw

    run("async", body, max_size=1)


def test_a_peer_release_timeout_bounds_the_reset_and_raises_timeout_error() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.begin()
        h.fake.hang["rollback"] = Gate()
        reset = h.pool._return(lease, None, 0.05, True)
        assert reset is not None
        with pytest.raises(TimeoutError):
            await reset
        assert raw.terminated
        assert h.stats().in_use == 0

    run("async", body, max_size=1)


def test_a_busy_connection_that_will_not_settle_fails_a_peer_release_with_timeout_error() -> (
    None
):
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.start_query()
        h.fake.settle_result = False  # the cancelled query did not end in time
        reset = h.pool._return(lease, None, None, True)
        assert reset is not None
        with pytest.raises(TimeoutError, match="did not end in time"):
            await reset
        assert raw.terminated

    run("async", body, max_size=1)


def test_a_plain_release_still_only_logs_a_failing_reset() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        lease.begin()
        h.fake.fail_io("rollback", RuntimeError("rollback failed"), times=1)
        await h.release(lease)  # does not raise
        assert h.stats().connections_closed + h.stats().connections_lost >= 1

    run("async", body, max_size=1)


def test_a_peer_releaser_cancelled_during_its_reset_leaves_the_connection_reset_and_kept() -> (
    None
):
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        raw = unwrap(lease)
        lease.begin()
        h.fake.hang["rollback"] = gate = Gate()
        reset = h.pool._return(lease, None, None, True)
        assert reset is not None
        task = asyncio.ensure_future(reset)
        await eventually(lambda: h.fake.count("rollback") == 1, what="reset started")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not raw.terminated
        gate.set()  # the reset that started over goes through
        await eventually(lambda: h.stats().idle == 1, what="connection back")
        assert unwrap(await h.acquire()) is raw
        s = h.stats()
        assert (s.connections_opened, s.connections_closed) == (1, 0)

    run("async", body, max_size=1)


def test_a_custom_reset_that_never_waits_arms_no_timer_and_one_that_waits_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timers = 0
    real_timeout = asyncio.timeout

    def counting_timeout(delay: float | None) -> Any:
        nonlocal timers
        timers += 1
        return real_timeout(delay)

    waits = False

    async def reset(conn: Any) -> None:
        if waits:
            await asyncio.sleep(10)

    async def body(h: Harness) -> None:
        nonlocal waits
        await h.open()
        monkeypatch.setattr(asyncio, "timeout", counting_timeout)
        for _ in range(3):
            await h.release(await h.acquire())
        assert timers == 0
        assert h.stats().idle == 1
        waits = True
        lease = await h.acquire()
        raw = unwrap(lease)
        await h.release(lease)  # bounded by reset_timeout, then discarded
        assert timers == 1
        assert raw.terminated

    run("async", body, max_size=1, reset=reset, reset_timeout=0.05)


def test_the_next_connects_use_the_connect_args_set_now() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        first = unwrap(await h.acquire())
        h.pool._set_connect_args("postgresql://app@db2/app", {"application_name": "two"})
        assert "db2" in repr(h.pool)
        await h.pool.resize(2, 2)
        await eventually(lambda: len(h.fake.connections) == 2, what="second connect")
        second = h.fake.connections[1]
        assert (second.dsn, second.kwargs) == ("postgresql://app@db2/app",
                                               {"application_name": "two"})
        assert first.dsn == "postgresql://app@db1/app"
        with pytest.raises(ValueError, match="sslmode"):
            h.pool._set_connect_args(None, {"sslmode": "bogus"})
        with pytest.raises(TypeError, match="dsn must be a str"):
            h.pool._set_connect_args(5, {})

    run("async", body, dsn="postgresql://app@db1/app", max_size=2)


def test_leases_know_a_released_stand_in_of_a_facade_s_own() -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        await h.release(lease)
        gone = stand_in(_gone)
        set_con(lease, gone)  # what a façade does once the pool ended the lease
        assert lease.released
        with pytest.raises(_Gone, match="use execute"):
            lease.execute("SELECT 1")
        with pytest.raises(_Gone, match="set autocommit"):
            lease.autocommit = True
        with pytest.raises(ConnectionReleasedError):
            unwrap(lease)
        with pytest.raises(ConnectionReleasedError):
            reset_on_release(lease, "full")
        assert repr(gone) == "<released>"

    run("async", body, max_size=1)


@both
def test_with_fail_fast_waiters_an_acquire_waiting_through_an_outage_fails_with_its_cause(
    kind: str,
) -> None:
    async def body(h: Harness) -> None:
        await h.open()
        lease = await h.acquire()
        h.fake.fail_connects(None)
        unwrap(lease).break_()
        await h.release(lease)  # lost: the pool starts reconnecting, and failing
        start = time.monotonic()
        with pytest.raises(PoolConnectError) as info:
            await h.acquire(timeout=30)
        assert 0.2 <= time.monotonic() - start < 5.0
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert "failing for" in str(info.value)
        assert h.stats().waiting == 0
        h.fake.heal()
        await eventually(lambda: h.stats().idle == 1, what="back after the outage")

    run(kind, body, max_size=1, fail_fast_after=0.2, fail_fast_waiters=True,
        backoff_max=0.05)


class _HookError(Exception):
    pass


@both
@pytest.mark.parametrize("on", [True, False])
def test_configure_fails_waiter_hands_a_failed_configure_to_the_oldest_acquire(
    kind: str, on: bool
) -> None:
    calls = 0

    def configure(conn: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise _HookError("configure went wrong")

    async def configure_async(conn: Any) -> None:
        configure(conn)

    async def body(h: Harness) -> None:
        await h.open(wait=False)
        if on:
            with pytest.raises(PoolConnectError) as info:
                await h.acquire(timeout=5)
            assert isinstance(info.value.__cause__, _HookError)
            assert "the configure hook raised _HookError: configure went wrong" in str(info.value)
        lease = await h.acquire(timeout=5)  # the next connect configures cleanly
        assert calls == 2
        await h.release(lease)
        s = h.stats()
        assert s.connections_failed == 1 and s.waiting == 0 and s.in_use == 0

    run(kind, body, min_size=0, max_size=1, configure_fails_waiter=on,
        configure=configure_async if kind == "async" else configure)
