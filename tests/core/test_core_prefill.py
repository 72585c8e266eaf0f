"""``prefill=False``: ``min_size`` bounds what is kept, nothing is opened ahead.

SQLAlchemy's ``QueuePool`` opens a connection only for a checkout that needs
one and then keeps up to ``pool_size`` of them; its integration runs the
pgmarina pool so.  With the default (``prefill=True``) the pool opens
``min_size`` connections at ``open()`` and replaces those that close.
"""

from __future__ import annotations

import pytest
from coresim import Shell, Waiter

from pgmarina._core import PoolConfig


def test_open_connects_nothing_and_a_caller_gets_its_own_connect() -> None:
    sh = Shell(min_size=3, max_size=5, prefill=False)
    sh.open(0.0)
    assert sh.in_flight() == 0 and sh.core.size == 0
    waiter = sh.acquire(0.1)
    assert isinstance(waiter, Waiter)
    assert sh.in_flight() == 1, "one caller, one connect: the pool does not fill to min_size"
    sh.succeed(0.2)
    assert waiter.entry is not None
    assert sh.in_flight() == 0 and sh.core.size == 1


def test_the_default_still_fills_to_min_size() -> None:
    sh = Shell(min_size=3, max_size=5)
    sh.open(0.0)
    assert sh.in_flight() == 2  # max_connecting
    assert len(sh.succeed_all(0.1)) == 3
    assert sh.core.size == 3 and sh.core.fill_target == 3


def test_up_to_min_size_connections_are_kept_idle_past_max_idle() -> None:
    sh = Shell(min_size=2, max_size=4, max_idle=10.0, keepalive=None, prefill=False)
    sh.open(0.0)
    entries = sh.lease_all(3, 0.0)
    assert sh.core.size == 3
    for entry in entries:
        sh.checkin(entry, 1.0)
    sh.core.housekeeping(20.0)
    sh.drain()
    # The one above min_size went after max_idle; the other two stay.
    assert len(sh.closes) == 1
    sh.close_all()
    assert sh.core.size == 2 and len(sh.core.idle) == 2
    sh.core.housekeeping(1000.0)
    assert sh.in_flight() == 0 and not sh.closes and sh.core.size == 2


def test_a_connection_that_expires_is_not_replaced_until_a_caller_needs_one() -> None:
    sh = Shell(min_size=1, max_size=2, max_lifetime=100.0, lifetime_jitter=0.0,
               keepalive=None, prefill=False)
    sh.open(0.0)
    sh.checkin(sh.lease_all(1, 0.0)[0], 1.0)
    sh.core.housekeeping(200.0)
    sh.close_all()
    assert sh.core.size == 0
    assert sh.in_flight() == 0, "prefill=False: no connect ahead of demand"
    waiter = sh.acquire(201.0)
    assert isinstance(waiter, Waiter) and sh.in_flight() == 1


def test_a_failed_connect_nobody_waits_for_any_more_is_not_retried() -> None:
    sh = Shell(min_size=2, max_size=2, prefill=False)
    sh.open(0.0)
    waiter = sh.acquire(0.0)
    assert isinstance(waiter, Waiter)
    sh.core.forget_waiter(waiter, timed_out=True)
    assert sh.fail(0.1) is None, "nobody waits: the connect is dropped, not retried"
    assert sh.core.size == 0


def test_prefill_takes_only_a_bool() -> None:
    with pytest.raises(TypeError, match="prefill must be a bool"):
        PoolConfig(prefill=1)  # type: ignore[arg-type]
