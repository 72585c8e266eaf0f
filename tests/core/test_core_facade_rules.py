"""Core rules the psycopg_pool façade needed, written for every pool.

``max_idle=0``: no connection above ``min_size`` sits idle (with ``min_size=0``, a null
pool).  ``keeps()``: whether a lease coming back would be reused, so that a shell skips
the reset of a connection it is about to close.
"""

from __future__ import annotations

import pytest
from coresim import CLOSING, IDLE, IN_USE, Shell, Waiter

from pgmarina._core import PoolConfig


def _null(**settings: object) -> Shell:
    return Shell(**{"min_size": 0, "max_size": 2, "max_idle": 0, **settings})  # type: ignore[arg-type]


def test_max_idle_zero_is_accepted_and_kept_as_zero() -> None:
    """It was refused as "not a positive duration" before null pools needed it."""
    assert PoolConfig(max_idle=0).max_idle == 0.0
    with pytest.raises(ValueError, match="max_idle"):
        PoolConfig(max_idle=-1)


def test_a_null_pool_opens_nothing_until_asked() -> None:
    sh = _null()
    sh.open(0.0)
    assert sh.in_flight() == 0
    assert sh.core.size == 0


def test_a_lease_coming_back_to_a_null_pool_with_nobody_waiting_is_closed() -> None:
    sh = _null()
    sh.open(0.0)
    waiter = sh.acquire(0.0)
    assert isinstance(waiter, Waiter)
    (entry,) = sh.succeed(0.1)
    assert waiter.entry is entry
    assert not sh.core.keeps(entry, 0.2)
    sh.checkin(entry, 0.2)
    assert entry.state is CLOSING
    assert sh.closes == [entry]
    assert sh.core.idle == [] and sh.core.size == 0
    assert sh.in_flight() == 0  # and no replacement: nothing is wanted


def test_a_lease_coming_back_to_a_null_pool_goes_to_the_request_waiting() -> None:
    sh = _null(max_size=1)
    sh.open(0.0)
    first = sh.acquire(0.0)
    assert isinstance(first, Waiter)
    (entry,) = sh.succeed(0.1)
    second = sh.acquire(0.2)  # max_size reached: it waits
    assert isinstance(second, Waiter) and sh.in_flight() == 0
    assert sh.core.keeps(entry, 0.3)
    sh.checkin(entry, 0.3)
    assert second.entry is entry and entry.state is IN_USE
    assert sh.closes == []


def test_a_connect_finishing_for_a_request_that_left_is_closed_in_a_null_pool() -> None:
    sh = _null()
    sh.open(0.0)
    waiter = sh.acquire(0.0)
    assert isinstance(waiter, Waiter)
    waiter.gone = True
    sh.core.forget_waiter(waiter, timed_out=True)
    (entry,) = sh.succeed(0.5)
    assert entry.state is CLOSING
    assert sh.core.idle == []


def test_max_idle_zero_keeps_min_size_idle_but_nothing_above_it() -> None:
    sh = Shell(min_size=1, max_size=3, max_idle=0)
    sh.fill(0.0)
    a, b = sh.lease_all(2, 1.0)
    sh.checkin(a, 2.0)
    assert a.state is CLOSING  # size 2 > min_size 1 and nobody waits
    sh.checkin(b, 2.1)
    assert b.state is IDLE  # size 1: min_size stays
    assert sh.core.idle == [b]


def test_housekeeping_closes_an_idle_leftover_above_min_size_when_max_idle_is_zero() -> None:
    """A hand-off whose waiter vanished leaves an entry idle; the next tick closes it."""
    sh = _null()
    sh.open(0.0)
    waiter = sh.acquire(0.0)
    assert isinstance(waiter, Waiter)
    (entry,) = sh.succeed(0.1)
    other = sh.acquire(0.2)
    assert isinstance(other, Waiter)
    other.gone = True  # left, but the core has not heard yet: the hand-off fails
    sh.checkin(entry, 0.3)
    assert entry.state is IDLE
    sh.core.housekeeping(0.4)
    sh.drain()
    assert entry.state is CLOSING


def test_resize_recomputes_what_a_pool_with_max_idle_zero_keeps() -> None:
    sh = Shell(min_size=0, max_size=3, max_idle=0)
    sh.open(0.0)
    sh.core.resize(2, 3, 0.0)
    entries = sh.succeed_all(0.0)
    assert len(entries) == 2 and all(e.state is IDLE for e in entries)


def test_keeps_says_what_checkin_does() -> None:
    """keeps() is the test checkin() applies, asked ahead of it."""
    sh = Shell(min_size=1, max_size=2, max_lifetime=10.0, lifetime_jitter=0.0, max_uses=3)
    (_entry,) = sh.fill(0.0)
    taken = sh.take(1.0)
    assert sh.core.keeps(taken, 2.0)
    assert not sh.core.keeps(taken, 10.0)  # past its lifetime
    sh.checkin(taken, 2.0)
    assert taken.state is IDLE
    sh.checkin(sh.take(3.0), 3.5)
    worn = sh.take(5.0)
    assert worn.uses == 3 and not sh.core.keeps(worn, 5.5)
    sh.checkin(worn, 5.5)
    assert worn.state is CLOSING


def test_keeps_is_false_once_the_pool_closes_and_after_expire() -> None:
    sh = Shell(min_size=1, max_size=1)
    (_entry,) = sh.fill(0.0)
    leased = sh.take(1.0)
    sh.core.expire(1.5)
    assert not sh.core.keeps(leased, 2.0)  # an older generation
    sh2 = Shell(min_size=1, max_size=1)
    sh2.fill(0.0)
    leased2 = sh2.take(1.0)
    sh2.core.close(1.5)
    assert not sh2.core.keeps(leased2, 2.0)


def test_keeps_is_false_for_a_lease_above_a_shrunk_max_size_even_with_waiters() -> None:
    sh = Shell(min_size=2, max_size=2)
    sh.fill(0.0)
    a, b = sh.lease_all(2, 1.0)
    waiter = sh.acquire(1.1)
    assert isinstance(waiter, Waiter)
    sh.core.resize(1, 1, 1.2)
    assert not sh.core.keeps(a, 1.3)  # two connections, room for one: this one goes
    sh.checkin(a, 1.3)
    assert a.state is CLOSING
    assert sh.core.keeps(b, 1.4)
    sh.checkin(b, 1.4)
    assert waiter.entry is b
