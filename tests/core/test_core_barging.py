"""Barging (``barge_window > 0``): who may pass the queue, and for how long.

With a window the core parks a returned entry on the idle stack and nudges
the oldest waiter (``wake(waiter, None)``) instead of handing the entry over;
until that waiter comes back, any checkout may take the entry.  Once the
oldest waiter has waited the whole window, hand-off is strict FIFO again.
"""

from __future__ import annotations

import pytest
from coresim import IDLE, IN_USE, Shell, Waiter

from pgmarina.errors import PoolClosed, TooManyWaiters


def _full(window: float = 1.0, size: int = 2) -> tuple[Shell, list]:
    sh = Shell(min_size=size, max_size=size, barge_window=window)
    sh.fill(0.0)
    return sh, [sh.take(0.0) for _ in range(size)]


def _queue(sh: Shell, *times: float) -> list[Waiter]:
    """Waiters queued at ``times`` (nothing is idle)."""
    waiters = []
    for t in times:
        waiter = sh.acquire(t)
        assert isinstance(waiter, Waiter), f"expected to queue at {t}, got {waiter!r}"
        waiters.append(waiter)
    return waiters


def test_a_returned_entry_goes_idle_and_the_oldest_waiter_is_nudged() -> None:
    sh, (a, _) = _full()
    w1, w2 = _queue(sh, 0.1, 0.2)
    sh.checkin(a, 0.3)
    assert a.state is IDLE and sh.core.idle == [a]
    assert w1.nudged and w1.entry is None
    assert not w2.nudged
    assert list(sh.core.waiters) == [w2]


def test_a_newcomer_may_take_the_idle_entry_before_the_nudged_waiter_comes() -> None:
    sh, (a, _) = _full()
    (w1,) = _queue(sh, 0.1)
    sh.checkin(a, 0.3)
    assert sh.take(0.3) is a  # the releasing caller comes straight back
    assert sh.come(w1, 0.4) is None  # too late: back at the head of the queue
    assert list(sh.core.waiters) == [w1]
    assert not w1.nudged


def test_a_waiter_that_lost_the_race_keeps_its_place_ahead_of_later_waiters() -> None:
    sh, (a, b) = _full()
    w1, w2 = _queue(sh, 0.1, 0.2)
    sh.checkin(a, 0.3)
    sh.take(0.3)
    sh.come(w1, 0.4)
    assert list(sh.core.waiters) == [w1, w2]
    sh.checkin(b, 0.5)
    assert w1.nudged and not w2.nudged


def test_the_nudged_waiter_takes_the_idle_entry_when_nobody_barged() -> None:
    sh, (a, _) = _full()
    (w1,) = _queue(sh, 0.1)
    sh.checkin(a, 0.3)
    assert sh.come(w1, 0.4) is a
    assert a.state is IN_USE
    st = sh.core.stats()
    assert st.wait_time_total == pytest.approx(0.4 - 0.1)
    assert (st.acquires, st.waited_acquires) == (3, 1)


def test_once_the_oldest_waiter_has_waited_the_window_hand_off_is_strict() -> None:
    sh, (a, _) = _full(window=1.0)
    (w1,) = _queue(sh, 0.0)
    sh.checkin(a, 1.0)  # w1 has waited exactly the window
    assert w1.entry is a and a.state is IN_USE and not w1.nudged
    assert sh.core.idle == []


def test_newcomers_queue_once_the_oldest_waiter_has_waited_the_window() -> None:
    sh, (a, _) = _full(window=1.0)
    (w1,) = _queue(sh, 0.0)
    sh.checkin(a, 0.5)  # nudged, a idle
    w2 = sh.acquire(0.6)  # a newcomer barges and takes a
    assert w2 is a
    sh.come(w1, 0.7)  # w1 back at the head, since 0.0
    assert isinstance(sh.acquire(1.5), Waiter)  # w1 waited 1.5: no more barging
    sh.checkin(a, 1.6)
    assert w1.entry is a  # strict hand-off to w1


def test_a_gone_waiter_is_skipped_by_the_nudge() -> None:
    sh, (a, _) = _full()
    w1, w2 = _queue(sh, 0.1, 0.2)
    w1.gone = True
    sh.checkin(a, 0.3)
    assert not w1.nudged and w2.nudged
    assert list(sh.core.waiters) == []


def test_a_nudged_waiter_that_leaves_passes_the_nudge_on() -> None:
    sh, (a, _) = _full()
    w1, w2 = _queue(sh, 0.1, 0.2)
    sh.checkin(a, 0.3)
    assert w1.nudged
    sh.core.forget_waiter(w1, timed_out=True, nudged=True)
    assert w2.nudged
    assert sh.come(w2, 0.4) is a
    assert sh.core.stats().timeouts == 1


def test_a_nudged_waiter_that_leaves_after_a_barge_wakes_nobody() -> None:
    sh, (a, _) = _full()
    w1, w2 = _queue(sh, 0.1, 0.2)
    sh.checkin(a, 0.3)
    sh.take(0.3)  # barged: nothing idle
    sh.core.forget_waiter(w1, nudged=True)
    assert not w2.nudged
    assert list(sh.core.waiters) == [w2]


def test_a_nudged_waiter_coming_after_close_is_refused() -> None:
    sh, (a, _) = _full()
    (w1,) = _queue(sh, 0.1)
    sh.checkin(a, 0.3)
    assert sh.core.close(0.35) == []  # w1 is out of the queue, nudged
    with pytest.raises(PoolClosed):
        sh.come(w1, 0.4)


def test_a_nudged_waiter_skips_expired_idle_entries_and_opens_a_replacement() -> None:
    sh = Shell(min_size=1, max_size=1, barge_window=1.0, max_lifetime=10.0, lifetime_jitter=0)
    sh.fill(0.0)
    a = sh.take(0.0)
    (w1,) = _queue(sh, 5.0)
    sh.checkin(a, 5.5)  # nudges w1
    assert sh.come(w1, 10.5) is None  # a expired meanwhile: retired
    assert list(sh.core.waiters) == [w1]
    assert sh.in_flight() == 1  # its replacement is on the way
    sh.succeed(10.6)
    assert w1.entry is not None and w1.entry is not a


def test_without_a_window_hand_off_stays_strict_fifo() -> None:
    sh, (a, _) = _full(window=0.0)
    (w1,) = _queue(sh, 0.1)
    sh.checkin(a, 0.2)
    assert w1.entry is a and not w1.nudged
    assert isinstance(sh.acquire(0.3), Waiter)


def test_only_one_nudged_waiter_is_out_at_a_time() -> None:
    sh, (a, b) = _full()
    w1, w2 = _queue(sh, 0.1, 0.2)
    sh.checkin(a, 0.3)
    sh.checkin(b, 0.3)  # w1 is already on its way: w2 is not woken for nothing
    assert w1.nudged and not w2.nudged
    assert sh.come(w1, 0.4) is not None
    assert w2.nudged  # one more sits idle: w1 passed the nudge on
    assert sh.come(w2, 0.5) is not None
    assert sh.core.idle == [] and list(sh.core.waiters) == []


def test_a_nudged_waiter_that_was_barged_does_not_pass_the_nudge_on() -> None:
    sh, (a, _) = _full()
    w1, w2 = _queue(sh, 0.1, 0.2)
    sh.checkin(a, 0.3)
    sh.take(0.3)
    assert sh.come(w1, 0.4) is None
    assert not w2.nudged
    sh.checkin(a, 0.5)  # the next return nudges the head again: w1
    assert w1.nudged and not w2.nudged


def test_a_nudged_waiter_counts_against_max_waiting_and_in_stats() -> None:
    sh = Shell(min_size=1, max_size=1, barge_window=1.0, max_waiting=1)
    sh.fill(0.0)
    a = sh.take(0.0)
    (w1,) = _queue(sh, 0.1)
    sh.checkin(a, 0.2)  # w1 nudged, out of the queue
    assert w1.nudged and sh.core.stats().waiting == 1
    sh.take(0.2)  # barged
    with pytest.raises(TooManyWaiters):
        sh.acquire(0.3)
    assert sh.come(w1, 0.4) is None
    assert sh.core.stats().waiting == 1


def test_newcomers_queue_once_the_nudged_waiter_has_waited_the_window() -> None:
    sh, (a, _) = _full(window=1.0)
    (w1,) = _queue(sh, 0.0)
    sh.checkin(a, 0.5)  # w1 nudged; nobody else queues
    assert isinstance(sh.acquire(1.5), Waiter)  # w1 has waited 1.5: no barging past it
    assert sh.come(w1, 1.6) is a
