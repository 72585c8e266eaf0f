"""Connect failures: backoff, one probe at a time, fail fast, reconnect_failed."""

from __future__ import annotations

import pytest
from coresim import CLOSED, CONNECTING, ConnectError, Shell, Waiter

from pgmarina.errors import PoolConnectError, PoolError


def _nominal(attempt: int, initial: float = 0.1, cap: float = 1.0) -> float:
    return min(cap, initial * 2.0**attempt)


# ---------------------------------------------------------------------------
# backoff


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999999])
def test_retry_delays_grow_exponentially_from_backoff_initial_and_cap_at_backoff_max(
    rand: float,
) -> None:
    sh = Shell(rand=rand, min_size=1, max_size=1, backoff_initial=0.1, backoff_max=1.0)
    sh.open(0.0)
    t = 0.0
    delays = []
    for _ in range(8):
        delay = sh.fail(t)
        assert delay is not None
        delays.append(delay)
        t += delay
        assert sh.retry(t), "the retry should go ahead: min_size wants the connection"
    for attempt, delay in enumerate(delays):
        nominal = _nominal(attempt)
        assert 0.5 * nominal <= delay <= nominal
        assert delay == pytest.approx(nominal * (0.5 + 0.5 * rand))
    assert max(delays) <= 1.0
    assert delays[-1] == delays[-2] == delays[-3]  # capped


def test_the_first_retry_comes_within_backoff_initial() -> None:
    sh = Shell(rand=0.999999, min_size=1, max_size=1, backoff_initial=0.01, backoff_max=5.0)
    sh.open(0.0)
    delay = sh.fail(0.0)
    assert delay is not None and delay <= 0.01


def test_backoff_stays_capped_after_very_many_failures() -> None:
    sh = Shell(rand=0.999999, min_size=1, max_size=1, backoff_initial=0.5, backoff_max=30.0)
    sh.open(0.0)
    t = 0.0
    for _ in range(200):
        delay = sh.fail(t)
        assert delay is not None and 0 < delay <= 30.0
        t += delay
        sh.retry(t)
    assert sh.core.connections_failed == 200


def test_a_retry_is_not_due_before_its_delay_in_the_fake_shell() -> None:
    sh = Shell(min_size=1, max_size=1, backoff_initial=1.0, backoff_max=1.0)
    sh.open(0.0)
    delay = sh.fail(0.0)
    assert delay == pytest.approx(0.75)
    assert sh.retry(0.5) == []
    assert sh.in_flight() == 0
    assert len(sh.retry(0.75)) == 1
    assert sh.in_flight() == 1


def test_success_resets_the_backoff() -> None:
    sh = Shell(min_size=1, max_size=1, backoff_initial=0.1, backoff_max=10.0)
    sh.open(0.0)
    assert sh.fail(0.0) == pytest.approx(0.075)
    sh.retry(1.0)
    assert sh.fail(1.0) == pytest.approx(0.15)
    sh.retry(2.0)
    (entry,) = sh.succeed(2.0)
    assert sh.core.failing_since is None
    # A later outage starts again from backoff_initial.
    sh.take(3.0)
    sh.core.discard(entry, 4.0)
    assert sh.in_flight() == 1
    assert sh.fail(4.0) == pytest.approx(0.075)


def test_only_one_connect_is_in_flight_while_failing_even_with_many_waiters() -> None:
    sh = Shell(min_size=0, max_size=10, max_connecting=5, backoff_initial=0.1)
    sh.open(0.0)
    waiters = [sh.acquire(0.0) for _ in range(10)]
    assert sh.in_flight() == 5
    results = [sh.fail(0.1) for _ in range(5)]
    # The connects already under way fail one by one; only the last is kept
    # as the probe that retries.
    assert results[:4] == [None] * 4
    assert results[4] is not None
    assert sh.core.connecting == 1
    assert sh.core.size == 1
    assert sh.core.connections_failed == 5
    # More callers, housekeeping ticks, retries: never more than one probe.
    t = 0.1
    for _ in range(20):
        sh.acquire(t)
        sh.core.housekeeping(t)
        t += 0.5
        sh.retry(t)
        assert sh.in_flight() + len(sh.backoff) == 1
        assert sh.core.connecting == 1
        if sh.in_flight():
            assert sh.fail(t) is not None
    assert sh.core.size == 1
    assert all(isinstance(w, Waiter) and w.entry is None for w in waiters)


def test_waiters_are_served_as_soon_as_a_connect_succeeds_after_failures() -> None:
    sh = Shell(min_size=0, max_size=3, max_connecting=2)
    sh.open(0.0)
    w1, w2, w3 = (sh.acquire(0.0) for _ in range(3))
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter) and isinstance(w3, Waiter)
    assert sh.fail(0.5) is None
    delay = sh.fail(0.5)
    assert delay is not None
    sh.retry(0.5 + delay)
    sh.succeed(1.0)
    assert w1.entry is not None
    assert w2.entry is None
    # With the server back, the pool grows again at full speed.
    assert sh.in_flight() == 2
    sh.succeed(1.1)
    assert w2.entry is not None and w3.entry is not None
    assert sh.core.size == 3


def test_a_failed_connect_nobody_needs_any_more_is_dropped() -> None:
    sh = Shell(min_size=0, max_size=2)
    sh.open(0.0)
    waiter = sh.acquire(0.0)
    sh.core.forget_waiter(waiter, timed_out=True)
    (entry,) = sh.connects
    assert sh.fail(1.0) is None
    assert entry.state is CLOSED
    assert entry not in sh.core.entries
    assert (sh.core.size, sh.core.connecting) == (0, 0)
    assert sh.core.connections_failed == 1


def test_a_retry_nobody_needs_any_more_is_dropped() -> None:
    sh = Shell(min_size=0, max_size=2)
    sh.open(0.0)
    waiter = sh.acquire(0.0)
    (entry,) = sh.connects
    delay = sh.fail(1.0)
    assert delay is not None
    sh.core.forget_waiter(waiter, timed_out=True)
    assert sh.core.retry_due(entry, 1.0 + delay) is False
    assert entry.state is CLOSED
    assert (sh.core.size, sh.core.connecting) == (0, 0)
    # Asked again (a late timer): still no.
    assert sh.core.retry_due(entry, 5.0) is False


def test_connect_aborted_forgets_the_connecting_entry() -> None:
    sh = Shell(min_size=2, max_size=2, max_connecting=2)
    sh.open(0.0)
    a, b = sh.connects
    sh.connects.remove(a)
    sh.core.connect_aborted(a)
    assert a.state is CLOSED
    assert (sh.core.size, sh.core.connecting) == (1, 1)
    sh.core.connect_aborted(a)  # twice: no-op
    assert (sh.core.size, sh.core.connecting) == (1, 1)
    sh.succeed(1.0, n=1)
    sh.core.connect_aborted(b)  # already connected: no-op
    assert b in sh.core.idle


# ---------------------------------------------------------------------------
# fail fast


def test_enqueue_queues_while_failing_for_less_than_fail_fast_after() -> None:
    sh = Shell(min_size=1, max_size=1, fail_fast_after=5.0)
    sh.open(0.0)
    sh.fail(0.0)
    waiter = sh.acquire(4.9)
    assert isinstance(waiter, Waiter)
    assert list(sh.core.waiters) == [waiter]


def test_enqueue_fails_fast_after_fail_fast_after_with_the_last_connect_error_as_cause() -> None:
    sh = Shell(min_size=1, max_size=1, fail_fast_after=5.0)
    sh.open(0.0)
    sh.fail(0.0, ConnectError("first refusal"))
    sh.retry(1.0)
    last = ConnectError("connection refused\nis the server running?")
    sh.fail(1.0, last)
    queued = sh.acquire(4.0)
    with pytest.raises(PoolConnectError) as info:
        sh.acquire(5.0)
    assert info.value.__cause__ is last
    assert "ConnectError: connection refused" in str(info.value)
    assert "5.0s" in str(info.value)
    assert isinstance(info.value, PoolError)
    assert list(sh.core.waiters) == [queued]
    assert sh.core.waited_acquires == 1


def test_enqueue_queues_again_after_a_connect_succeeds() -> None:
    sh = Shell(min_size=1, max_size=1, fail_fast_after=5.0)
    sh.open(0.0)
    sh.fail(0.0)
    with pytest.raises(PoolConnectError):
        sh.acquire(6.0)
    sh.retry(6.0)
    (entry,) = sh.succeed(6.5)
    assert sh.take(6.5) is entry
    waiter = sh.acquire(7.0)
    assert isinstance(waiter, Waiter)
    sh.checkin(entry, 8.0)
    assert waiter.entry is entry


def test_fail_fast_never_refuses_a_caller_an_idle_entry_can_serve() -> None:
    sh = Shell(min_size=2, max_size=2, fail_fast_after=5.0)
    sh.open(0.0)
    sh.succeed(0.0, n=1)
    assert sh.fail(0.0) is not None
    entry = sh.acquire(100.0)
    assert entry is not None and not isinstance(entry, Waiter)
    with pytest.raises(PoolConnectError):
        sh.acquire(100.0)


def test_fail_fast_after_none_always_queues() -> None:
    sh = Shell(min_size=1, max_size=1, fail_fast_after=None)
    sh.open(0.0)
    sh.fail(0.0)
    assert isinstance(sh.acquire(1e6), Waiter)


def test_after_an_outage_with_no_probe_left_a_new_caller_queues_and_starts_one_probe() -> None:
    sh = Shell(min_size=0, max_size=2, fail_fast_after=5.0)
    sh.open(0.0)
    first = sh.acquire(0.0)
    delay = sh.fail(0.0)
    assert delay is not None
    sh.core.forget_waiter(first, timed_out=True)
    assert sh.retry(delay) == []  # dropped: nobody needs it
    waiter = sh.acquire(100.0)
    assert isinstance(waiter, Waiter)
    assert sh.in_flight() == 1
    # That probe fails too: now callers are refused at once.
    sh.fail(100.0)
    with pytest.raises(PoolConnectError):
        sh.acquire(100.0)


def test_timeout_message_says_why_nothing_came() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill(0.0)
    assert "all in use" in sh.core.timeout_message(1.5)
    sh.core.discard(sh.take(1.0), 1.0)
    sh.fail(1.0, ConnectError("no route to host"))
    message = sh.core.timeout_message(2.0)
    assert "cannot connect" in message
    assert "ConnectError: no route to host" in message


# ---------------------------------------------------------------------------
# reconnect_failed


def test_reconnect_failed_due_fires_once_per_outage_after_reconnect_timeout() -> None:
    sh = Shell(min_size=1, max_size=1, reconnect_timeout=10.0)
    assert sh.core.reconnect_failed_due(0.0) is False
    sh.open(0.0)
    sh.fail(0.0)
    assert sh.core.reconnect_failed_due(9.9) is False
    assert sh.core.reconnect_failed_due(10.0) is True
    assert sh.core.reconnect_failed_due(10.1) is False
    sh.retry(20.0)
    sh.fail(20.0)
    assert sh.core.reconnect_failed_due(500.0) is False
    # The outage ends ...
    sh.retry(600.0)
    (entry,) = sh.succeed(600.0)
    assert sh.core.reconnect_failed_due(1000.0) is False
    # ... and a new one is reported again, once.
    sh.core.discard(sh.take(1000.0), 1000.0)
    sh.fail(1000.0)
    assert sh.core.reconnect_failed_due(1009.0) is False
    assert sh.core.reconnect_failed_due(1010.0) is True
    assert sh.core.reconnect_failed_due(1011.0) is False
    assert entry.state is not CONNECTING


def test_the_first_retry_after_concurrent_failures_still_starts_at_backoff_initial() -> None:
    # The server is down when four connects are under way.  They fail one
    # after the other within a millisecond; three are dropped and the last is
    # kept as the probe.  That probe's first retry is the outage's first retry:
    # it should come after about backoff_initial (so a restarted server is
    # noticed within tens of milliseconds), not after backoff_initial * 2**3.
    sh = Shell(
        rand=0.999999,
        min_size=0,
        max_size=4,
        max_connecting=4,
        backoff_initial=0.01,
        backoff_max=1.0,
    )
    sh.open(0.0)
    for _ in range(4):
        sh.acquire(0.0)
    assert sh.in_flight() == 4
    delays = [sh.fail(0.001 * k) for k in range(4)]
    assert delays[:3] == [None, None, None]
    assert delays[3] is not None
    assert delays[3] <= 0.01
