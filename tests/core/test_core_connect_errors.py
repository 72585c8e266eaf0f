"""Rejected connects (wrong password, no such role or database) fail callers at once.

The core is told ``permanent=True`` by the shell (the adapter classifies the driver's
error).  It refuses the queued waiters and every caller that would wait, with the
server's words, and keeps one probe retrying every ``backoff_max`` until a connect
succeeds.  Transient failures keep the outage behaviour (backoff, waiting, fail fast
after ``fail_fast_after``).
"""

from __future__ import annotations

import pytest
from coresim import CLOSED, ConnectError, Shell, Waiter

from pgmarina.errors import PoolClosed, PoolConnectError, TooManyWaiters


class AuthError(ConnectError):
    """Stands for the driver's error for a wrong password."""


def _rejected(text: str = 'password authentication failed for user "app"') -> AuthError:
    return AuthError(text)


def _waiter(result: object) -> Waiter:
    assert isinstance(result, Waiter), f"expected to queue, got {result!r}"
    return result


def test_a_rejected_connect_fails_every_queued_waiter_at_once_with_the_servers_words() -> None:
    # The defect: a wrong password was retried like an outage, and waiters sat
    # out fail_fast_after / their timeout with the reason only in __cause__.
    sh = Shell(min_size=0, max_size=3, max_connecting=3, fail_fast_after=5.0)
    sh.open(0.0)
    waiters = [_waiter(sh.acquire(0.0)) for _ in range(3)]
    error = _rejected()
    sh.fail(0.01, error, permanent=True)
    assert list(sh.core.waiters) == []
    for waiter in waiters:
        assert isinstance(waiter.error, PoolConnectError)
        assert waiter.error.__cause__ is error
        assert 'AuthError: password authentication failed for user "app"' in str(waiter.error)
        assert waiter.entry is None
    # each caller gets an exception object of its own (raised in its own task/thread)
    assert len({id(w.error) for w in waiters}) == 3
    assert sh.core.timeouts == 0
    assert sh.core.stats().waiting == 0


def test_after_a_rejection_a_caller_that_would_wait_is_refused_at_once() -> None:
    sh = Shell(min_size=0, max_size=2, fail_fast_after=5.0)
    sh.open(0.0)
    _waiter(sh.acquire(0.0))
    error = _rejected()
    sh.fail(0.0, error, permanent=True)
    # well before fail_fast_after
    with pytest.raises(PoolConnectError) as info:
        sh.acquire(0.1)
    assert info.value.__cause__ is error
    assert "the server rejected the pool's connection" in str(info.value)
    assert "password authentication failed" in str(info.value)
    assert sh.core.waiters == type(sh.core.waiters)()


def test_refusals_name_the_pool_as_every_other_pool_error_does() -> None:
    """The core's refusals (a rejected server, too many waiters) began with the reason
    alone, where every other pool error begins with the pool's name."""
    sh = Shell(min_size=0, max_size=1, max_waiting=1)
    sh.core.name = "app"
    sh.open(0.0)
    _waiter(sh.acquire(0.0))
    with pytest.raises(TooManyWaiters, match=r"^app: 1 callers already wait"):
        sh.acquire(0.0)
    error = _rejected()
    sh.fail(0.0, error, permanent=True)
    with pytest.raises(PoolConnectError, match=r"^app: the server rejected"):
        sh.acquire(0.1)


def test_a_rejection_is_refused_at_once_even_with_fail_fast_after_none() -> None:
    sh = Shell(min_size=1, max_size=1, fail_fast_after=None)
    sh.open(0.0)
    sh.fail(0.0, _rejected(), permanent=True)
    with pytest.raises(PoolConnectError):
        sh.acquire(0.0)


def test_a_rejection_never_refuses_a_caller_an_idle_connection_can_serve() -> None:
    # Connections opened before the password was rotated still work.
    sh = Shell(min_size=2, max_size=3)
    sh.open(0.0)
    sh.succeed(0.0, n=1)
    sh.fail(0.0, _rejected(), permanent=True)
    entry = sh.acquire(1.0)
    assert not isinstance(entry, Waiter)
    with pytest.raises(PoolConnectError):
        sh.acquire(1.0)
    sh.checkin(entry, 2.0)
    assert sh.take(2.0) is entry


def test_after_a_rejection_one_probe_retries_every_backoff_max_even_with_nobody_asking() -> None:
    sh = Shell(rand=0.999999, min_size=0, max_size=4, max_connecting=4, backoff_max=2.0)
    sh.open(0.0)
    for _ in range(4):
        sh.acquire(0.0)
    assert sh.in_flight() == 4
    # the connects under way fail one after the other: all but the last are
    # dropped, and the last stays as the one probe, though no one waits now
    delays = [sh.fail(0.0, _rejected(), permanent=True) for _ in range(4)]
    assert delays[:3] == [None] * 3
    first = delays[3]
    assert first is not None and first == pytest.approx(2.0)
    assert (sh.core.size, sh.core.connecting) == (1, 1)
    t = first
    for _ in range(50):
        assert len(sh.retry(t)) == 1, "the probe goes on though no one waits"
        delay = sh.fail(t, _rejected(), permanent=True)
        assert delay is not None and 1.0 <= delay <= 2.0
        t += delay
    assert (sh.core.size, sh.core.connecting) == (1, 1)


def test_a_rejection_probe_uses_the_jittered_cap_not_the_initial_backoff() -> None:
    sh = Shell(rand=0.0, min_size=1, max_size=1, backoff_initial=0.01, backoff_max=4.0)
    sh.open(0.0)
    assert sh.fail(0.0, _rejected(), permanent=True) == pytest.approx(2.0)  # half the cap


def test_a_connect_that_succeeds_after_a_rejection_ends_it_and_callers_wait_again() -> None:
    sh = Shell(min_size=0, max_size=2, backoff_max=1.0)
    sh.open(0.0)
    _waiter(sh.acquire(0.0))
    delay = sh.fail(0.0, _rejected(), permanent=True)
    assert delay is not None
    # the password is fixed; the next probe gets in
    sh.retry(delay)
    (entry,) = sh.succeed(delay)
    assert sh.core.rejection is None and sh.core.failing_since is None
    assert sh.take(delay) is entry
    waiter = _waiter(sh.acquire(delay))
    sh.checkin(entry, delay + 1)
    assert waiter.entry is entry and waiter.error is None


def test_a_transient_failure_after_a_rejection_turns_the_pool_back_to_waiting() -> None:
    # The last attempt decides: the server is now restarting, which is an outage.
    sh = Shell(min_size=1, max_size=2, fail_fast_after=5.0)
    sh.open(0.0)
    delay = sh.fail(0.0, _rejected(), permanent=True)
    assert delay is not None
    with pytest.raises(PoolConnectError):
        sh.acquire(0.1)
    sh.retry(delay)
    sh.fail(delay, ConnectError("the database system is starting up"))
    assert sh.core.rejection is None
    waiter = _waiter(sh.acquire(delay))
    assert waiter.error is None


def test_the_probe_after_a_rejection_stops_when_the_pool_closes() -> None:
    sh = Shell(min_size=0, max_size=1)
    sh.open(0.0)
    sh.acquire(0.0)
    (entry,) = sh.connects
    delay = sh.fail(0.0, _rejected(), permanent=True)
    assert delay is not None
    sh.core.close(0.5)
    assert sh.core.retry_due(entry, delay) is False
    assert entry.state is CLOSED
    with pytest.raises(PoolClosed):
        sh.acquire(delay)


def test_a_rejection_message_names_no_password() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.open(0.0)
    sh.fail(0.0, _rejected("could not connect to postgresql://app:Sekrit9@db/x"), permanent=True)
    with pytest.raises(PoolConnectError) as info:
        sh.acquire(0.0)
    assert "Sekrit9" not in str(info.value)
    assert "postgresql://app:***@db/x" in str(info.value)


def test_without_a_refuse_callable_queued_waiters_stay_queued() -> None:
    sh = Shell(min_size=0, max_size=1)
    sh.core._refuse = None
    sh.open(0.0)
    waiter = _waiter(sh.acquire(0.0))
    sh.fail(0.0, _rejected(), permanent=True)
    assert list(sh.core.waiters) == [waiter]
    with pytest.raises(PoolConnectError):
        sh.acquire(0.1)


def test_connect_refusal_says_why_a_caller_would_be_refused() -> None:
    sh = Shell(min_size=1, max_size=1, fail_fast_after=5.0)
    assert sh.core.connect_refusal(0.0) is None
    sh.open(0.0)
    sh.fail(0.0, ConnectError("refused"))
    assert sh.core.connect_refusal(4.0) is None  # an outage: wait
    why = sh.core.connect_refusal(5.0)
    assert why is not None and "failing for 5.0s" in why and "ConnectError: refused" in why
    sh.retry(6.0)
    sh.fail(6.0, _rejected(), permanent=True)
    why = sh.core.connect_refusal(6.0)
    assert why is not None and "rejected" in why and "retried every 1s" in why


def test_timeout_messages_carry_the_last_connect_error() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.open(0.0)
    assert sh.core.connect_trouble() == ""
    sh.fail(0.0, TimeoutError("connect (and configure) timed out after 2s"))
    trouble = sh.core.connect_trouble()
    assert trouble == (
        "; the pool cannot connect: TimeoutError: connect (and configure) timed out after 2s"
    )
    assert trouble in sh.core.timeout_message(3.0)
