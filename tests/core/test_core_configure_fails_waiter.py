"""``configure_fails_waiter``: a connect whose ``configure`` hook raised fails
the caller that has waited longest, with the hook's error as the cause.

asyncpg's pool runs ``init`` inside the acquire that needed the connection,
so that acquire raises what ``init`` raised; its façade sets this.  By
default a hook failure is a failed connect like any other: retried with
backoff while callers wait (psycopg_pool's way).
"""

from __future__ import annotations

import pytest
from coresim import Shell, Waiter

from pgmarina._core import PoolConfig
from pgmarina.errors import PoolConnectError


class HookError(Exception):
    pass


def _queued(sh: Shell, now: float) -> Waiter:
    waiter = sh.acquire(now)
    assert isinstance(waiter, Waiter), f"expected to queue, got {waiter!r}"
    return waiter


def test_a_failed_configure_refuses_only_the_oldest_waiter_and_the_rest_are_served() -> None:
    sh = Shell(min_size=0, max_size=1, configure_fails_waiter=True)
    sh.open(0.0)
    first, second = _queued(sh, 0.0), _queued(sh, 0.1)
    error = HookError("init: no such function")
    delay = sh.fail(0.2, error, configured=False)
    assert isinstance(first.error, PoolConnectError)
    assert first.error.__cause__ is error
    assert "the configure hook raised HookError: init: no such function" in str(first.error)
    assert second.error is None and list(sh.core.waiters) == [second]
    # The connect is still wanted (by the second caller): it backs off and retries.
    assert delay is not None
    sh.retry(1.0)
    sh.succeed(1.0)
    assert second.entry is not None and second.error is None


def test_the_refusal_skips_waiters_that_already_left() -> None:
    sh = Shell(min_size=0, max_size=1, configure_fails_waiter=True)
    sh.open(0.0)
    gone, live = _queued(sh, 0.0), _queued(sh, 0.0)
    gone.gone = True  # cancelled, not yet out of the queue
    sh.fail(0.1, HookError("boom"), configured=False)
    assert gone.error is None
    assert isinstance(live.error, PoolConnectError)
    assert list(sh.core.waiters) == []


def test_with_nobody_left_waiting_the_connect_is_dropped_and_the_next_caller_connects_anew(
) -> None:
    sh = Shell(min_size=0, max_size=1, configure_fails_waiter=True)
    sh.open(0.0)
    waiter = _queued(sh, 0.0)
    assert sh.fail(0.1, HookError("boom"), configured=False) is None
    assert isinstance(waiter.error, PoolConnectError)
    assert sh.core.size == 0 and not sh.in_flight()
    again = _queued(sh, 0.2)  # not refused at once: one failure is no outage
    assert sh.in_flight()
    sh.succeed(0.3)
    assert again.entry is not None


@pytest.mark.parametrize("configured", [True, False])
def test_by_default_or_for_a_failed_connect_waiters_stay_queued(configured: bool) -> None:
    # Off by default; and on, a connect that failed before the hook ran
    # (configured=True) refuses nobody.
    sh = Shell(min_size=0, max_size=1, configure_fails_waiter=configured)
    sh.open(0.0)
    waiter = _queued(sh, 0.0)
    delay = sh.fail(0.1, HookError("boom"), configured=configured)
    assert delay is not None
    assert waiter.error is None and list(sh.core.waiters) == [waiter]


def test_the_setting_takes_a_bool_only() -> None:
    assert PoolConfig().configure_fails_waiter is False
    with pytest.raises(TypeError, match="configure_fails_waiter must be a bool, not int"):
        PoolConfig(configure_fails_waiter=1)  # type: ignore[arg-type]
