"""Filling, checkout, waiters, hand-off, growth and stats of the pool core."""

from __future__ import annotations

import pytest
from coresim import (
    CHECKING,
    CLOSING,
    CONNECTING,
    IDLE,
    IN_USE,
    RESETTING,
    Shell,
    Waiter,
    states,
)

from pgmarina._core import PoolStats
from pgmarina.errors import IllegalTransition, TooManyWaiters

# ---------------------------------------------------------------------------
# opening


def test_nothing_is_connected_before_open() -> None:
    sh = Shell(min_size=3, max_size=5)
    sh.core.housekeeping(1.0)
    assert sh.in_flight() == 0
    assert sh.core.size == 0
    assert sh.core.checkout(1.0) is None


def test_open_starts_at_most_max_connecting_connects_towards_min_size() -> None:
    sh = Shell(min_size=5, max_size=10, max_connecting=2)
    sh.open(0.0)
    assert sh.in_flight() == 2
    assert sh.core.size == 2
    assert sh.core.connecting == 2
    assert all(e.state is CONNECTING for e in sh.connects)


def test_open_keeps_filling_to_min_size_as_connects_succeed() -> None:
    sh = Shell(min_size=5, max_size=10, max_connecting=2)
    sh.open(0.0)
    rounds = 0
    while sh.in_flight():
        assert sh.in_flight() <= 2
        sh.succeed(float(rounds), n=1)
        rounds += 1
    assert rounds == 5
    assert sh.core.size == 5
    assert len(sh.core.idle) == 5
    assert sh.core.connecting == 0
    assert sh.core.connections_opened == 5


def test_open_twice_does_not_open_more_connections() -> None:
    sh = Shell(min_size=2, max_size=4, max_connecting=4)
    sh.open(0.0)
    sh.open(0.0)
    assert sh.in_flight() == 2


def test_open_with_min_size_zero_opens_nothing() -> None:
    sh = Shell(min_size=0, max_size=4)
    sh.open(0.0)
    assert sh.in_flight() == 0
    assert sh.core.size == 0


def test_connected_entries_get_their_connection_and_timestamps() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.open(0.0)
    (entry,) = sh.succeed(2.5)
    assert entry.conn == "conn1"
    assert entry.created_at == entry.alive_at == entry.idle_since == 2.5
    assert entry.state is IDLE
    assert entry.uses == 0


# ---------------------------------------------------------------------------
# checkout


def test_checkout_hands_out_the_most_recently_returned_entry_first() -> None:
    sh = Shell(min_size=3, max_size=3, max_connecting=3)
    sh.fill()
    a, b, c = sh.take(1.0), sh.take(1.0), sh.take(1.0)
    sh.checkin(a, 2.0)
    sh.checkin(b, 3.0)
    sh.checkin(c, 4.0)
    assert [sh.take(5.0) for _ in range(3)] == [c, b, a]


def test_checkout_leases_the_entry_and_counts_the_acquire() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(3.0)
    assert entry.state is IN_USE
    assert entry.uses == 1
    assert entry.acquired_at == 3.0
    assert sh.core.acquires == 1
    assert sh.core.idle == []


def test_checkout_returns_none_when_no_entry_is_idle() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    sh.take(1.0)
    assert sh.core.checkout(1.0) is None


def test_checkin_puts_a_clean_entry_back_on_the_idle_stack() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(1.0)
    sh.checkin(entry, 4.0)
    assert entry.state is IDLE
    assert entry.idle_since == entry.alive_at == 4.0
    assert sh.core.idle == [entry]
    assert sh.core.usage_time_total == pytest.approx(3.0)


def test_a_reset_entry_can_be_checked_in() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(1.0)
    sh.core.begin_reset(entry)
    assert entry.state is RESETTING
    assert sh.core.stats().in_use == 1
    sh.checkin(entry, 2.0)
    assert entry.state is IDLE
    assert sh.core.resets == 1


# ---------------------------------------------------------------------------
# waiters


def test_checkout_returns_none_while_waiters_are_queued() -> None:
    sh = Shell(min_size=0, max_size=2, max_connecting=2)
    sh.open(0.0)
    first = sh.acquire(0.0)
    assert isinstance(first, Waiter)
    # The connect for ``first`` succeeds: it must go to the waiter, not idle,
    # and a newcomer arriving while a waiter exists must not jump the queue.
    second = sh.acquire(0.0)
    assert isinstance(second, Waiter)
    sh.succeed(1.0, n=1)
    assert first.entry is not None
    assert sh.core.idle == []
    assert list(sh.core.waiters) == [second]
    assert sh.core.checkout(1.0) is None


def test_waiters_are_served_in_strict_fifo_order_under_contention() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    held = sh.take(0.0)
    waiters = [sh.acquire(0.0) for _ in range(5)]
    assert all(isinstance(w, Waiter) for w in waiters)
    order = []
    t = 1.0
    for _ in range(5):
        sh.checkin(held, t)
        (waiter, held) = sh.served[-1]
        order.append(waiter)
        t += 1.0
    assert order == waiters
    assert all(w.entry is held for w in waiters)  # one connection, passed along
    assert sh.core.acquires == 6
    assert sh.core.waited_acquires == 5
    assert sh.core.idle == []


def test_newcomers_queue_behind_existing_waiters_even_when_an_entry_is_about_to_return() -> None:
    sh = Shell(min_size=2, max_size=2, max_connecting=2)
    sh.fill()
    a, b = sh.take(0.0), sh.take(0.0)
    early = sh.acquire(1.0)
    assert isinstance(early, Waiter)
    # A newcomer arrives just before ``a`` comes back: it queues behind ``early``.
    late = sh.acquire(2.0)
    assert isinstance(late, Waiter)
    sh.checkin(a, 2.5)
    assert early.entry is a
    assert late.entry is None
    # Another newcomer now: still behind ``late``.
    later = sh.acquire(2.6)
    assert isinstance(later, Waiter)
    sh.checkin(b, 3.0)
    assert late.entry is b
    assert later.entry is None
    assert list(sh.core.waiters) == [later]


def test_a_returned_entry_goes_to_the_waiter_without_touching_the_idle_stack() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(0.0)
    waiter = sh.acquire(1.0)
    sh.checkin(entry, 2.0)
    assert isinstance(waiter, Waiter)
    assert waiter.entry is entry
    assert entry.state is IN_USE
    assert entry.uses == 2
    assert entry.acquired_at == 2.0
    assert sh.core.idle == []


# ---------------------------------------------------------------------------
# checked hand-off


def test_a_gone_waiter_never_swallows_an_entry_it_goes_to_the_next_live_waiter() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(0.0)
    w1, w2, w3 = (sh.acquire(0.0) for _ in range(3))
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter) and isinstance(w3, Waiter)
    w1.gone = True  # gave up, but the shell has not told the core yet
    w2.gone = True
    acquires = sh.core.acquires
    sh.checkin(entry, 1.0)
    assert w1.entry is None and w2.entry is None
    assert w3.entry is entry
    assert sh.core.acquires == acquires + 1
    assert entry.uses == 2
    assert list(sh.core.waiters) == []


def test_an_entry_offered_only_to_gone_waiters_goes_idle_and_counts_no_acquire() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(0.0)
    waiters = [sh.acquire(0.0) for _ in range(3)]
    for w in waiters:
        assert isinstance(w, Waiter)
        w.gone = True
    sh.checkin(entry, 1.0)
    assert all(w.entry is None for w in waiters)
    assert entry.state is IDLE
    assert sh.core.idle == [entry]
    assert sh.core.acquires == 1
    assert entry.uses == 1
    assert list(sh.core.waiters) == []
    assert sh.take(2.0) is entry


def test_a_fresh_connection_skips_gone_waiters_too() -> None:
    sh = Shell(min_size=0, max_size=1)
    sh.open(0.0)
    w1, w2 = sh.acquire(0.0), sh.acquire(0.0)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter)
    w1.gone = True
    (entry,) = sh.succeed(1.0)
    assert w2.entry is entry
    assert sh.core.acquires == 1
    assert entry.uses == 1


def test_forget_waiter_takes_it_out_of_the_queue_and_counts_timeouts() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(0.0)
    w1, w2 = sh.acquire(0.0), sh.acquire(0.0)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter)
    sh.core.forget_waiter(w1, timed_out=True)
    sh.core.forget_waiter(w1)  # already out: a no-op
    assert list(sh.core.waiters) == [w2]
    assert sh.core.timeouts == 1
    sh.checkin(entry, 1.0)
    assert w2.entry is entry


# ---------------------------------------------------------------------------
# growth


def test_waiters_grow_the_pool_by_at_most_max_connecting_at_a_time() -> None:
    sh = Shell(min_size=0, max_size=4, max_connecting=2)
    sh.open(0.0)
    waiters = [sh.acquire(0.0) for _ in range(10)]
    assert sh.in_flight() == 2
    assert sh.core.size == 2
    t = 1.0
    while sh.in_flight():
        assert sh.in_flight() <= 2
        assert sh.core.size <= 4
        sh.succeed(t, n=1)
        t += 1.0
    assert sh.core.size == 4
    assert sh.core.connections_opened == 4
    served = [w for w in waiters if isinstance(w, Waiter) and w.entry is not None]
    assert served == waiters[:4]
    assert len(sh.core.waiters) == 6


def test_the_pool_never_grows_past_max_size_however_many_wait() -> None:
    sh = Shell(min_size=1, max_size=3, max_connecting=3)
    sh.fill()
    sh.lease_all(3, 0.0)
    for _ in range(20):
        sh.acquire(1.0)
    sh.core.housekeeping(2.0)
    assert sh.in_flight() == 0
    assert sh.core.size == 3
    assert sh.core.stats().waiting == 20


def test_a_waiter_already_covered_by_a_connect_does_not_start_another() -> None:
    sh = Shell(min_size=0, max_size=5, max_connecting=5)
    sh.open(0.0)
    sh.acquire(0.0)
    assert sh.in_flight() == 1
    sh.core.housekeeping(0.5)
    assert sh.in_flight() == 1
    sh.acquire(0.6)
    assert sh.in_flight() == 2


def test_waiters_are_all_served_once_connects_and_checkins_come_through() -> None:
    sh = Shell(min_size=0, max_size=2, max_connecting=1)
    sh.open(0.0)
    waiters = [sh.acquire(0.0) for _ in range(6)]
    t = 1.0
    while sh.in_flight():
        sh.succeed(t)
        t += 1
    for _ in range(10):
        for waiter, entry in list(sh.served):
            if entry.state is IN_USE and waiter.entry is entry:
                waiter.entry = None  # the borrower is done with it
                sh.served.remove((waiter, entry))
                sh.checkin(entry, t)
                t += 1
    assert all(w.entry is None and w not in sh.core.waiters for w in waiters)
    assert sh.core.acquires == 6
    assert sh.core.size == 2


# ---------------------------------------------------------------------------
# max_waiting


def test_max_waiting_refuses_one_more_waiter_with_too_many_waiters() -> None:
    sh = Shell(min_size=1, max_size=1, max_waiting=2)
    sh.fill()
    entry = sh.take(0.0)
    w1, w2 = sh.acquire(0.0), sh.acquire(0.0)
    with pytest.raises(TooManyWaiters, match="max_waiting=2"):
        sh.acquire(0.0)
    assert sh.core.too_many_waiters == 1
    assert sh.core.stats().too_many_waiters == 1
    assert list(sh.core.waiters) == [w1, w2]
    assert sh.core.waited_acquires == 2
    # Once one is served there is room again.
    sh.checkin(entry, 1.0)
    assert isinstance(sh.acquire(1.0), Waiter)
    assert len(sh.core.waiters) == 2


def test_max_waiting_zero_means_no_limit() -> None:
    sh = Shell(min_size=1, max_size=1, max_waiting=0)
    sh.fill()
    sh.take(0.0)
    for _ in range(500):
        sh.acquire(0.0)
    assert len(sh.core.waiters) == 500
    assert sh.core.too_many_waiters == 0


# ---------------------------------------------------------------------------
# discard


def test_discarding_a_leased_entry_counts_it_lost_and_replaces_it() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(1.0)
    sh.core.discard(entry, 3.0)
    sh.drain()
    assert entry.state is CLOSING
    assert sh.closes == [entry]
    assert sh.core.connections_lost == 1
    assert sh.core.usage_time_total == pytest.approx(2.0)
    assert sh.in_flight() == 1  # replacement for min_size
    sh.close_all()
    assert entry not in sh.core.entries
    assert sh.core.connections_closed == 1


def test_discarding_an_idle_entry_takes_it_off_the_idle_stack() -> None:
    sh = Shell(min_size=0, max_size=2, max_connecting=2)
    sh.open(0.0)
    a, b = sh.lease_all(2)
    sh.checkin(a, 1.0)
    sh.checkin(b, 1.0)
    sh.core.discard(a, 2.0, lost=False)
    assert sh.core.idle == [b]
    assert sh.core.connections_lost == 0
    sh.core.discard(a, 2.0)  # already retired: ignored
    assert sh.core.connections_lost == 0


def test_discarding_an_entry_during_its_checkout_check_adds_no_stale_usage_time() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=1.0)
    sh.fill(0.0)
    entry = sh.core.checkout(1000.0)
    assert entry is not None and entry.state is CHECKING
    # The check is cancelled half a second later; the shell discards the entry.
    sh.core.discard(entry, 1000.5)
    # It was never leased, so at most the half second of checking may count as
    # usage, not the 1000 s it sat idle since it was connected.
    assert sh.core.usage_time_total <= 0.5


# ---------------------------------------------------------------------------
# illegal moves


def test_checking_in_an_idle_entry_raises_illegal_transition() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(0.0)
    sh.checkin(entry, 1.0)
    before = sh.core.stats()
    with pytest.raises(IllegalTransition):
        sh.core.checkin(entry, 2.0)  # released twice
    assert sh.core.stats() == before
    assert sh.core.idle == [entry]


@pytest.mark.parametrize("when", ["connecting", "checking", "pinging"])
def test_checking_in_an_entry_that_was_never_leased_raises_illegal_transition(
    when: str,
) -> None:
    sh = Shell(min_size=1, max_size=1, check_window=1.0, keepalive=1.0)
    sh.open(0.0)
    if when == "connecting":
        entry = sh.connects[0]
    else:
        sh.succeed(0.0)
        if when == "checking":
            got = sh.core.checkout(5.0)
            assert got is not None
            entry = got
        else:
            sh.core.housekeeping(5.0)
            sh.drain()
            entry = sh.pings[0]
    with pytest.raises(IllegalTransition):
        sh.core.checkin(entry, 6.0)


def test_check_done_on_an_entry_not_being_checked_raises_illegal_transition() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(0.0)
    with pytest.raises(IllegalTransition):
        sh.core.check_done(entry, True, 1.0)
    sh.checkin(entry, 1.0)
    with pytest.raises(IllegalTransition):
        sh.core.check_done(entry, False, 1.0)
    assert sh.core.checks_failed == 0


def test_ping_done_on_an_entry_not_being_pinged_raises_illegal_transition() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    (entry,) = sh.core.idle
    with pytest.raises(IllegalTransition):
        sh.core.ping_done(entry, True, 1.0)
    sh.take(1.0)
    with pytest.raises(IllegalTransition):
        sh.core.ping_done(entry, True, 1.0)


def test_connect_results_for_an_entry_not_connecting_raise_illegal_transition() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    (entry,) = sh.core.idle
    with pytest.raises(IllegalTransition):
        sh.core.connect_succeeded(entry, "conn", 1.0)
    with pytest.raises(IllegalTransition):
        sh.core.connect_failed(entry, OSError("x"), 1.0)
    assert sh.core.connections_opened == 1
    assert sh.core.connections_failed == 0


def test_reset_of_an_entry_not_leased_raises_illegal_transition() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    (entry,) = sh.core.idle
    with pytest.raises(IllegalTransition):
        sh.core.begin_reset(entry)
    assert entry.state is IDLE
    assert sh.core.resets == 0


def test_closed_for_an_entry_that_was_never_retired_raises_illegal_transition() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill()
    entry = sh.take(0.0)
    with pytest.raises(IllegalTransition):
        sh.core.closed(entry)
    assert entry.state is IN_USE
    assert sh.core.size == 1


# ---------------------------------------------------------------------------
# stats


def _sizes(stats: PoolStats) -> tuple[int, int, int, int, int]:
    return (stats.size, stats.idle, stats.in_use, stats.waiting, stats.connecting)


def test_stats_count_sizes_and_counters_as_the_pool_is_used() -> None:
    sh = Shell(min_size=2, max_size=3, max_connecting=2)
    core = sh.core
    st = core.stats()
    assert (st.min_size, st.max_size) == (2, 3)
    assert _sizes(st) == (0, 0, 0, 0, 0)

    sh.open(0.0)
    assert _sizes(core.stats()) == (2, 0, 0, 0, 2)

    sh.succeed(1.0)
    st = core.stats()
    assert _sizes(st) == (2, 2, 0, 0, 0)
    assert st.connections_opened == 2

    a, b = sh.take(2.0), sh.take(2.0)
    w1, w2 = sh.acquire(2.0), sh.acquire(2.0)
    st = core.stats()
    # size counts the connect started for the waiters; max_size caps it at 3.
    assert _sizes(st) == (3, 0, 2, 2, 1)
    assert (st.acquires, st.waited_acquires) == (2, 2)

    sh.fail(3.0)
    st = core.stats()
    assert st.connections_failed == 1
    assert _sizes(st) == (3, 0, 2, 2, 1)  # backing off still counts as connecting

    sh.retry(10.0)
    sh.succeed(10.0)
    assert isinstance(w1, Waiter) and w1.entry is not None
    st = core.stats()
    assert _sizes(st) == (3, 0, 3, 1, 0)
    assert st.acquires == 3
    assert st.wait_time_total == pytest.approx(10.0 - 2.0)  # w1 queued at 2, served at 10

    core.begin_reset(a)
    assert _sizes(core.stats()) == (3, 0, 3, 1, 0)
    sh.checkin(a, 12.0)  # goes straight to w2
    assert isinstance(w2, Waiter) and w2.entry is a
    st = core.stats()
    assert _sizes(st) == (3, 0, 3, 0, 0)
    assert (st.acquires, st.resets) == (4, 1)

    sh.checkin(b, 14.0)
    core.discard(w1.entry, 14.0)
    sh.close_all()
    st = core.stats()
    assert _sizes(st) == (2, 1, 1, 0, 0)
    assert (st.connections_lost, st.connections_closed) == (1, 1)
    assert st.usage_time_total == pytest.approx((12 - 2) + (14 - 2) + (14 - 10))
    assert st.wait_time_total == pytest.approx((10 - 2) + (12 - 2))  # w1, then w2
    assert st.timeouts == 0
    assert st.checks_failed == 0


def test_stats_match_the_entries_states() -> None:
    sh = Shell(min_size=2, max_size=6, max_connecting=3, check_window=1.0, keepalive=5.0)
    sh.fill(0.0)
    leased = sh.lease_all(4, 0.0)
    sh.checkin(leased[0], 1.0)
    sh.checkin(leased[1], 1.0)
    checking = sh.core.checkout(10.0)
    assert checking is not None and checking.state is CHECKING
    sh.core.housekeeping(10.0)
    sh.drain()
    counts = states(sh.core)
    st = sh.core.stats()
    assert st.idle == counts.get(IDLE, 0) == len(sh.core.idle) == 0
    assert st.in_use == counts.get(IN_USE, 0) + counts.get(CHECKING, 0) == 3
    assert len(sh.pings) == 1
    assert st.size == sum(counts.values()) == 4
