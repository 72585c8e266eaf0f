"""Lifetimes, uses, generations, checkout checks, idle shrink and keepalive."""

from __future__ import annotations

import pytest
from coresim import CHECKING, CLOSING, CONNECTING, IDLE, IN_USE, PINGING, Shell, Waiter

# ---------------------------------------------------------------------------
# max_lifetime


@pytest.mark.parametrize("rand", [0.0, 0.25, 0.5, 0.999999])
def test_expires_at_lies_between_lifetime_minus_jitter_and_lifetime(rand: float) -> None:
    sh = Shell(rand=rand, min_size=1, max_size=1, max_lifetime=100.0, lifetime_jitter=0.2)
    sh.open(0.0)
    (entry,) = sh.succeed(7.0)
    assert 7.0 + 100.0 * (1 - 0.2) <= entry.expires_at <= 7.0 + 100.0
    assert entry.expires_at == pytest.approx(7.0 + 100.0 * (1 - 0.2 * rand))


def test_no_jitter_gives_exactly_max_lifetime() -> None:
    sh = Shell(rand=0.9, min_size=1, max_size=1, max_lifetime=50.0, lifetime_jitter=0.0)
    sh.open(0.0)
    (entry,) = sh.succeed(1.0)
    assert entry.expires_at == 51.0


def test_without_max_lifetime_entries_never_expire() -> None:
    sh = Shell(min_size=1, max_size=1, max_lifetime=None)
    (entry,) = sh.fill()
    assert entry.expires_at == float("inf")
    assert sh.take(1e9) is entry


def _lifetime_shell(**settings: object) -> Shell:
    defaults: dict[str, object] = {
        "min_size": 1,
        "max_size": 2,
        "max_lifetime": 100.0,
        "lifetime_jitter": 0.0,
    }
    return Shell(**{**defaults, **settings})  # type: ignore[arg-type]


def test_an_expired_idle_entry_is_retired_at_checkout_and_replaced() -> None:
    sh = _lifetime_shell()
    (old,) = sh.fill(0.0)
    assert sh.take(99.0) is old
    sh.checkin(old, 99.5)
    assert sh.core.checkout(100.0) is None
    sh.drain()
    assert old.state is CLOSING
    assert sh.closes == [old]
    assert sh.in_flight() == 1  # replacement to keep min_size
    assert sh.core.size == 1
    (new,) = sh.succeed(100.5)
    assert sh.take(100.5) is new


def test_checkout_skips_expired_entries_and_hands_out_a_live_one() -> None:
    sh = _lifetime_shell(min_size=0, max_size=2)
    sh.open(0.0)
    w1, w2 = sh.acquire(0.0), sh.acquire(0.0)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter)
    sh.succeed(0.0, n=1)  # expires at 100
    sh.succeed(50.0, n=1)  # expires at 150
    old, young = w1.entry, w2.entry
    assert old is not None and young is not None
    sh.checkin(young, 60.0)
    sh.checkin(old, 61.0)  # most recently used, but expires first
    assert sh.take(120.0) is young
    assert old.state is CLOSING


def test_an_expired_leased_entry_is_retired_at_checkin_and_replaced() -> None:
    sh = _lifetime_shell()
    (entry,) = sh.fill(0.0)
    sh.take(50.0)
    sh.checkin(entry, 120.0)
    assert entry.state is CLOSING
    assert sh.core.idle == []
    assert sh.closes == [entry]
    assert sh.in_flight() == 1
    assert sh.core.usage_time_total == pytest.approx(70.0)


def test_an_expired_entry_coming_back_is_not_handed_to_a_waiter() -> None:
    sh = _lifetime_shell(min_size=1, max_size=1)
    (entry,) = sh.fill(0.0)
    sh.take(50.0)
    waiter = sh.acquire(60.0)
    assert isinstance(waiter, Waiter)
    sh.checkin(entry, 120.0)
    assert waiter.entry is None
    assert entry.state is CLOSING
    (new,) = sh.succeed(121.0)  # the replacement goes to the waiter
    assert waiter.entry is new


def test_housekeeping_retires_expired_idle_entries_and_refills_to_min_size() -> None:
    sh = _lifetime_shell(min_size=2, max_size=4, max_connecting=2)
    a, b = sh.fill(0.0)
    sh.core.housekeeping(99.9)
    assert sh.in_flight() == 0
    assert sh.closes == []
    sh.core.housekeeping(100.0)
    sh.drain()
    assert {a.state, b.state} == {CLOSING}
    assert sorted(e.id for e in sh.closes) == sorted([a.id, b.id])
    assert sh.in_flight() == 2
    assert sh.core.size == 2
    assert sh.core.idle == []


# ---------------------------------------------------------------------------
# max_uses


def test_max_uses_retires_an_entry_at_the_checkin_that_uses_it_up() -> None:
    sh = Shell(min_size=1, max_size=1, max_uses=3)
    (entry,) = sh.fill(0.0)
    for t in (1.0, 2.0):
        sh.take(t)
        sh.checkin(entry, t + 0.5)
        assert entry.state is IDLE
    sh.take(3.0)
    assert entry.uses == 3
    sh.checkin(entry, 3.5)
    assert entry.state is CLOSING
    assert sh.in_flight() == 1
    (new,) = sh.succeed(4.0)
    assert new.uses == 0
    assert sh.take(4.0) is new


def test_max_uses_zero_never_retires_for_use() -> None:
    sh = Shell(min_size=1, max_size=1, max_uses=0)
    (entry,) = sh.fill(0.0)
    for t in range(100):
        sh.take(float(t))
        sh.checkin(entry, t + 0.5)
    assert entry.state is IDLE
    assert entry.uses == 100


# ---------------------------------------------------------------------------
# generations: expire()


def test_expire_replaces_idle_entries_at_once_and_leased_ones_at_checkin() -> None:
    sh = Shell(min_size=3, max_size=3, max_connecting=3)
    a, b, c = sh.fill(0.0)
    leased = sh.take(1.0)
    idle = {a, b, c} - {leased}
    sh.core.expire(2.0)
    sh.drain()
    assert sh.core.generation == 1
    assert all(e.state is CLOSING for e in idle)
    assert set(sh.closes) == idle
    assert sh.core.idle == []
    assert sh.in_flight() == 2  # the two idle ones are replaced now
    assert leased.state is IN_USE
    fresh = sh.succeed(3.0)
    assert all(e.generation == 1 for e in fresh)
    sh.checkin(leased, 4.0)
    assert leased.state is CLOSING
    assert sh.in_flight() == 1
    (last,) = sh.succeed(5.0)
    assert last.generation == 1
    assert set(sh.core.idle) == {*fresh, last}


def test_an_old_generation_entry_is_not_handed_to_a_waiter_on_checkin() -> None:
    sh = Shell(min_size=1, max_size=1)
    (entry,) = sh.fill(0.0)
    sh.take(0.0)
    waiter = sh.acquire(1.0)
    sh.core.expire(1.5)
    sh.checkin(entry, 2.0)
    assert isinstance(waiter, Waiter)
    assert waiter.entry is None
    assert entry.state is CLOSING
    (new,) = sh.succeed(2.5)
    assert waiter.entry is new


# ---------------------------------------------------------------------------
# check_window


def test_an_entry_used_within_the_check_window_is_trusted_without_a_check() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=2.0)
    (entry,) = sh.fill(0.0)
    assert sh.take(1.0) is entry
    sh.checkin(entry, 10.0)
    assert sh.take(12.0) is entry  # exactly the window: still trusted


def test_an_entry_idle_longer_than_the_check_window_comes_out_checking() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=2.0)
    (entry,) = sh.fill(0.0)
    sh.take(1.0)
    sh.checkin(entry, 10.0)
    got = sh.core.checkout(12.01)
    assert got is entry
    assert entry.state is CHECKING
    assert sh.core.acquires == 1  # not counted until the check passes
    st = sh.core.stats()
    assert (st.idle, st.in_use) == (0, 1)


def test_check_done_ok_leases_the_checked_entry() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=2.0)
    (entry,) = sh.fill(0.0)
    assert sh.core.checkout(5.0) is entry
    assert sh.core.check_done(entry, True, 5.5) is True
    assert entry.state is IN_USE
    assert entry.alive_at == 5.5
    assert entry.acquired_at == 5.5
    assert entry.uses == 1
    assert sh.core.acquires == 1
    assert sh.core.checks_failed == 0


def test_check_done_not_ok_retires_the_entry_and_counts_the_loss() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=2.0)
    (entry,) = sh.fill(0.0)
    assert sh.core.checkout(5.0) is entry
    assert sh.core.check_done(entry, False, 5.5) is False
    sh.drain()
    assert entry.state is CLOSING
    assert sh.closes == [entry]
    assert sh.core.checks_failed == 1
    assert sh.core.connections_lost == 1
    assert sh.core.acquires == 0
    assert sh.in_flight() == 1  # replaced for min_size
    st = sh.core.stats()
    assert (st.checks_failed, st.connections_lost, st.size, st.connecting) == (1, 1, 1, 1)


def test_check_window_none_never_checks() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=None)
    (entry,) = sh.fill(0.0)
    assert sh.take(1e6) is entry


def test_check_window_zero_checks_any_entry_that_sat_idle_at_all() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=0.0)
    (entry,) = sh.fill(0.0)
    assert sh.take(0.0) is entry
    sh.checkin(entry, 1.0)
    got = sh.core.checkout(1.001)
    assert got is entry and entry.state is CHECKING


# ---------------------------------------------------------------------------
# max_idle shrink


def _five_idle(**settings: object) -> tuple[Shell, list]:
    """A pool of five entries, returned one by one at t=10, 11, 12, 13, 14."""
    defaults: dict[str, object] = {"min_size": 2, "max_size": 5, "max_connecting": 5}
    sh = Shell(**{**defaults, **settings})  # type: ignore[arg-type]
    sh.fill(0.0)
    entries = sh.lease_all(5, 0.0)
    for t, entry in enumerate(entries, start=10):
        sh.checkin(entry, float(t))
    assert sh.core.idle == entries
    return sh, entries


def test_max_idle_shrinks_least_recently_used_entries_first() -> None:
    sh, (e10, e11, e12, e13, e14) = _five_idle(max_idle=100.0)
    sh.core.housekeeping(109.9)
    assert sh.closes == [] and sh.core.size == 5
    sh.core.housekeeping(111.0)
    sh.drain()
    assert sh.closes == [e10, e11]
    assert sh.core.idle == [e12, e13, e14]
    assert sh.core.size == 3
    assert sh.in_flight() == 0


def test_max_idle_shrink_never_goes_below_min_size() -> None:
    sh, (_e10, _e11, e12, e13, e14) = _five_idle(max_idle=100.0)
    sh.core.housekeeping(1000.0)
    sh.drain()
    assert sh.closes[-1] is e12
    assert len(sh.closes) == 3
    assert sh.core.idle == [e13, e14]  # the most recently used stay
    assert sh.core.size == 2
    sh.core.housekeeping(5000.0)
    sh.drain()
    assert sh.core.size == 2
    assert e13.state is IDLE and e14.state is IDLE
    assert sh.in_flight() == 0


def test_max_idle_counts_leased_entries_towards_min_size() -> None:
    sh, entries = _five_idle(max_idle=100.0)
    held = [sh.take(20.0) for _ in range(2)]
    assert held == [entries[4], entries[3]]
    sh.core.housekeeping(1000.0)
    sh.drain()
    # Two leased entries already make min_size: every idle one may go.
    assert sh.core.idle == []
    assert sh.core.size == 2


def test_max_idle_none_never_shrinks() -> None:
    sh, _ = _five_idle(max_idle=None)
    sh.core.housekeeping(1e9)
    assert sh.core.size == 5
    assert len(sh.core.idle) == 5


# ---------------------------------------------------------------------------
# keepalive


def test_keepalive_pings_entries_idle_longer_than_keepalive() -> None:
    sh = Shell(min_size=2, max_size=2, max_connecting=2, keepalive=30.0)
    sh.fill(0.0)
    a = sh.take(10.0)
    b = sh.take(10.0)
    sh.checkin(a, 10.0)
    sh.checkin(b, 20.0)
    sh.core.housekeeping(39.9)
    assert sh.pings == [] and sh.core.stats().idle == 2
    sh.core.housekeeping(40.0)
    sh.drain()
    assert sh.pings == [a]
    assert a.state is PINGING
    assert sh.core.idle == [b]
    st = sh.core.stats()
    assert (st.size, st.idle, st.in_use) == (2, 1, 0)
    assert sh.core.drained is False


def test_a_successful_ping_returns_the_entry_to_idle_as_alive() -> None:
    sh = Shell(min_size=1, max_size=1, keepalive=30.0)
    (entry,) = sh.fill(0.0)
    sh.core.housekeeping(30.0)
    sh.ping_all(30.5, ok=True)
    assert entry.state is IDLE
    assert entry.alive_at == 30.5
    assert sh.core.idle == [entry]
    sh.core.housekeeping(31.0)
    sh.drain()
    assert sh.pings == []


def test_a_successful_ping_hands_the_entry_to_a_waiter() -> None:
    sh = Shell(min_size=1, max_size=1, keepalive=30.0)
    (entry,) = sh.fill(0.0)
    sh.core.housekeeping(30.0)
    waiter = sh.acquire(30.1)
    assert isinstance(waiter, Waiter)
    assert sh.in_flight() == 0  # max_size reached: wait for the ping
    sh.ping_all(30.5, ok=True)
    assert waiter.entry is entry
    assert entry.state is IN_USE
    assert sh.core.acquires == 1


def test_a_failed_ping_retires_the_entry_and_counts_the_loss() -> None:
    sh = Shell(min_size=1, max_size=1, keepalive=30.0)
    (entry,) = sh.fill(0.0)
    sh.core.housekeeping(30.0)
    waiter = sh.acquire(30.1)
    sh.ping_all(30.5, ok=False)
    assert entry.state is CLOSING
    assert sh.core.checks_failed == 1
    assert sh.core.connections_lost == 1
    assert sh.in_flight() == 1
    (new,) = sh.succeed(31.0)
    assert isinstance(waiter, Waiter) and waiter.entry is new


def test_a_ping_of_an_entry_that_expired_meanwhile_retires_it() -> None:
    sh = Shell(min_size=1, max_size=1, keepalive=30.0, max_lifetime=100.0, lifetime_jitter=0)
    (entry,) = sh.fill(0.0)
    sh.core.housekeeping(99.0)
    sh.ping_all(100.0, ok=True)
    assert entry.state is CLOSING
    assert sh.core.checks_failed == 0
    assert sh.in_flight() == 1


def test_check_idle_pings_every_idle_entry() -> None:
    sh = Shell(min_size=2, max_size=2, max_connecting=2)
    a, b = sh.fill(0.0)
    taken = sh.core.check_idle(1.0)
    assert set(taken) == {a, b}
    assert all(e.state is PINGING for e in taken)
    assert sh.core.idle == []
    for entry in taken:
        sh.core.ping_done(entry, True, 2.0)
    assert set(sh.core.idle) == {a, b}


def test_keepalive_pings_do_not_prevent_max_idle_shrink() -> None:
    # The defaults: keepalive (60 s) is shorter than max_idle (600 s).  Pings
    # keep idle connections alive; they are not uses, so connections above
    # min_size must still be closed once idle for max_idle.
    sh = Shell(min_size=1, max_size=3, max_connecting=3, keepalive=60.0, max_idle=600.0)
    sh.fill(0.0)
    for entry in sh.lease_all(3, 0.0):
        sh.checkin(entry, 0.0)
    assert sh.core.size == 3
    for tick in range(1, 701):
        sh.core.housekeeping(float(tick))
        sh.ping_all(float(tick), ok=True)
        sh.close_all()
    assert sh.core.size == 1


def test_housekeeping_before_open_or_after_close_does_nothing() -> None:
    sh = Shell(min_size=2, max_size=2, keepalive=1.0, max_idle=1.0)
    sh.core.housekeeping(100.0)
    assert sh.in_flight() == 0
    sh.fill(0.0)
    sh.core.close(1.0)
    sh.close_all()
    sh.core.housekeeping(100.0)
    sh.drain()
    assert sh.pings == [] and sh.connects == []
    assert sh.core.size == 0


def test_entries_born_connecting_are_counted_but_not_idle() -> None:
    sh = Shell(min_size=2, max_size=2, max_connecting=2)
    sh.open(0.0)
    assert all(e.state is CONNECTING for e in sh.connects)
    st = sh.core.stats()
    assert (st.size, st.idle, st.connecting) == (2, 0, 2)
