"""Barging leaves only a *returned* lease for the taking.

Regression, found when the thread ``Pool`` began to barge by default: with a
barge window, every usable entry went to the idle stack with a nudge to the
oldest waiter, a fresh connection too.  Until that waiter came for it anyone
could take it, and the waiter met it as an idle entry: with ``check_window=0``
it health-checked a connection opened a moment before, just for it.  Barging
pays off only when the borrower that returned the entry comes straight back
for it; nobody comes back for a fresh, pinged or just-checked entry, so it
goes to the oldest waiter (which is woken either way).
"""

from __future__ import annotations

from coresim import IN_USE, Shell, Waiter


def test_with_a_window_a_fresh_connection_goes_straight_to_the_waiter_it_was_opened_for() -> None:
    sh = Shell(min_size=0, max_size=1, barge_window=1.0)
    sh.open(0.0)
    waiter = sh.acquire(0.0)
    assert isinstance(waiter, Waiter)
    (entry,) = sh.succeed(0.1)
    assert waiter.entry is entry and entry.state is IN_USE
    assert not waiter.nudged
    assert sh.core.idle == []  # nobody can take it first
    assert sh.core.stats().acquires == 1


def test_with_a_window_a_fresh_connection_is_handed_over_without_a_health_check() -> None:
    """The conformance case: ``check_window=0`` checked every entry taken from the idle stack."""
    sh = Shell(min_size=0, max_size=1, barge_window=1.0, check_window=0.0)
    sh.open(0.0)
    waiter = sh.acquire(0.0)
    assert isinstance(waiter, Waiter)
    (entry,) = sh.succeed(0.1)
    assert waiter.entry is entry and entry.state is IN_USE  # not CHECKING


def test_with_a_window_an_entry_back_from_its_keepalive_ping_goes_to_the_waiter() -> None:
    sh = Shell(min_size=1, max_size=1, barge_window=1.0, keepalive=1.0)
    (entry,) = sh.fill(0.0)
    sh.core.housekeeping(2.0)
    sh.drain()
    assert sh.pings == [entry]
    waiter = sh.acquire(2.0)  # nothing idle, and the pool is full: it queues
    assert isinstance(waiter, Waiter)
    sh.ping_all(2.1)
    assert waiter.entry is entry and entry.state is IN_USE and not waiter.nudged


def test_with_a_window_an_entry_checked_for_a_caller_that_left_goes_to_the_waiter() -> None:
    sh = Shell(min_size=1, max_size=1, barge_window=1.0, check_window=1.0)
    (entry,) = sh.fill(0.0)
    assert sh.core.checkout(5.0) is entry  # idle for 5 s: to be checked first
    waiter = sh.acquire(5.0)
    assert isinstance(waiter, Waiter)
    assert sh.core.check_done(entry, True, 5.1, borrower_left=True) is False
    assert waiter.entry is entry and entry.state is IN_USE and not waiter.nudged


def test_with_a_window_a_returned_lease_is_still_left_for_its_borrower_to_take_back() -> None:
    sh = Shell(min_size=1, max_size=1, barge_window=1.0)
    sh.fill(0.0)
    entry = sh.take(0.0)
    waiter = sh.acquire(0.1)
    assert isinstance(waiter, Waiter)
    sh.checkin(entry, 0.2)
    assert waiter.nudged and waiter.entry is None
    assert sh.take(0.2) is entry  # the returning borrower barges
