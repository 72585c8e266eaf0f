"""``fail_fast_waiters``: an outage fails the callers already queued, too.

asyncpg's pool fails an acquire with the error of the connect it needed, and
its acquire timeout defaults to ``None``; on pgmarina's defaults such a
caller would wait out the whole outage.  With ``fail_fast_waiters`` the
queued waiters are refused at the first failed connect once the pool has
failed for ``fail_fast_after``, as a new caller would be.
"""

from __future__ import annotations

import pytest
from coresim import ConnectError, Shell, Waiter

from pgmarina._core import PoolConfig
from pgmarina.errors import PoolConnectError


def _queued(sh: Shell, now: float) -> Waiter:
    waiter = sh.acquire(now)
    assert isinstance(waiter, Waiter), f"expected to queue, got {waiter!r}"
    return waiter


def test_queued_waiters_are_refused_at_the_first_failure_past_fail_fast_after() -> None:
    sh = Shell(min_size=0, max_size=2, fail_fast_after=5.0, fail_fast_waiters=True)
    sh.open(0.0)
    waiters = [_queued(sh, 0.0), _queued(sh, 0.0)]
    sh.fail(0.0)
    sh.fail(0.0)  # the second connect in flight is dropped: one probe
    assert all(w.error is None for w in waiters)
    t = 0.0
    while t < 4.9:  # failures before fail_fast_after leave them queued
        t += 1.0
        sh.retry(t)
        if sh.in_flight():
            sh.fail(min(t, 4.9))
    assert all(w.error is None for w in waiters)
    sh.retry(6.0)
    error = ConnectError("refused, still")
    sh.fail(6.0, error)
    assert list(sh.core.waiters) == []
    for waiter in waiters:
        assert isinstance(waiter.error, PoolConnectError)
        assert waiter.error.__cause__ is error
        assert "failing for 6.0s" in str(waiter.error)
        assert waiter.entry is None
    assert waiters[0].error is not waiters[1].error  # raised in two tasks: one each


def test_without_fail_fast_waiters_queued_waiters_ride_the_outage_out() -> None:
    sh = Shell(min_size=0, max_size=1, fail_fast_after=5.0)
    sh.open(0.0)
    waiter = _queued(sh, 0.0)
    sh.fail(0.0)
    sh.retry(10.0)
    sh.fail(10.0)
    assert waiter.error is None and list(sh.core.waiters) == [waiter]
    sh.retry(20.0)
    sh.succeed(20.0)
    assert waiter.entry is not None


def test_with_fail_fast_after_zero_the_first_failure_refuses_the_waiters() -> None:
    sh = Shell(min_size=0, max_size=1, fail_fast_after=0.0, fail_fast_waiters=True)
    sh.open(0.0)
    waiter = _queued(sh, 0.0)
    sh.fail(0.1)
    assert isinstance(waiter.error, PoolConnectError)


def test_fail_fast_waiters_needs_fail_fast_after() -> None:
    sh = Shell(min_size=0, max_size=1, fail_fast_after=None, fail_fast_waiters=True)
    sh.open(0.0)
    waiter = _queued(sh, 0.0)
    sh.fail(0.0)
    sh.retry(100.0)
    sh.fail(100.0)
    assert waiter.error is None


def test_a_pool_refused_its_waiters_keeps_probing_for_its_floor_and_serves_again() -> None:
    sh = Shell(min_size=1, max_size=1, fail_fast_after=1.0, fail_fast_waiters=True)
    sh.open(0.0)
    sh.fail(0.0)
    waiter = _queued(sh, 0.5)
    sh.retry(2.0)
    assert sh.fail(2.0) is not None  # the floor keeps one probe going
    assert isinstance(waiter.error, PoolConnectError)
    sh.retry(4.0)
    sh.succeed(4.0)
    served = sh.acquire(4.0)
    assert not isinstance(served, Waiter)


def test_fail_fast_waiters_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match=r"^fail_fast_waiters must be a bool"):
        PoolConfig(fail_fast_waiters=1)  # type: ignore[arg-type]
