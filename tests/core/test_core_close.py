"""close(), terminate() and resize()."""

from __future__ import annotations

import pytest
from coresim import (
    CHECKING,
    CLOSED,
    CLOSING,
    CONNECTING,
    IDLE,
    IN_USE,
    PINGING,
    RESETTING,
    Shell,
    Waiter,
)

from pgmarina._core import Entry
from pgmarina.errors import PoolClosed

# ---------------------------------------------------------------------------
# close


def test_close_returns_the_waiters_in_order_for_the_shell_to_fail() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.fill(0.0)
    sh.take(0.0)
    waiters = [sh.acquire(0.0) for _ in range(3)]
    assert sh.core.close(1.0) == waiters
    assert list(sh.core.waiters) == []
    assert sh.core.stats().waiting == 0
    assert all(isinstance(w, Waiter) and w.entry is None for w in waiters)


def test_close_retires_idle_entries_at_once() -> None:
    sh = Shell(min_size=3, max_size=3, max_connecting=3)
    entries = sh.fill(0.0)
    sh.core.close(1.0)
    sh.drain()
    assert sh.core.idle == []
    assert all(e.state is CLOSING for e in entries)
    assert set(sh.closes) == set(entries)
    assert sh.core.size == 0
    assert sh.in_flight() == 0  # no refill for min_size
    assert sh.core.drained
    sh.close_all()
    assert all(e.state is CLOSED for e in entries)
    assert sh.core.entries == set()
    assert sh.core.connections_closed == 3


def test_close_retires_leased_entries_at_checkin_and_drained_flips_when_all_are_back() -> None:
    sh = Shell(min_size=1, max_size=3, max_connecting=3)
    sh.fill(0.0)
    a, b, c = sh.lease_all(3, 0.0)
    sh.checkin(c, 0.5)
    assert sh.acquire(0.5) is c  # c was idle: served at once
    sh.core.begin_reset(b)
    sh.core.close(1.0)
    assert sh.core.closing
    assert not sh.core.drained
    sh.checkin(a, 2.0)
    assert a.state is CLOSING
    assert not sh.core.drained
    sh.checkin(b, 2.0)  # after its reset
    assert b.state is CLOSING
    assert not sh.core.drained
    sh.checkin(c, 3.0)
    assert c.state is CLOSING
    assert sh.core.drained
    assert sh.in_flight() == 0
    sh.close_all()
    assert sh.core.size == 0
    assert sh.core.entries == set()
    st = sh.core.stats()
    assert (st.size, st.idle, st.in_use, st.connections_closed) == (0, 0, 0, 3)


def test_after_close_nothing_is_handed_out_and_nobody_may_queue() -> None:
    sh = Shell(min_size=1, max_size=2)
    sh.fill(0.0)
    sh.core.close(1.0)
    assert sh.core.checkout(2.0) is None
    with pytest.raises(PoolClosed):
        sh.core.enqueue(Waiter(), 2.0)
    with pytest.raises(PoolClosed):
        sh.core.open(2.0)
    assert sh.core.waited_acquires == 0


def test_a_connect_ending_after_close_is_retired_not_handed_out() -> None:
    sh = Shell(min_size=2, max_size=2, max_connecting=2)
    sh.open(0.0)
    ok_entry, failing = sh.connects
    sh.core.close(1.0)
    sh.succeed(2.0, n=1)
    assert ok_entry.state is CLOSING
    assert sh.closes == [ok_entry]
    assert sh.core.idle == []
    assert sh.fail(2.0) is None
    assert failing.state is CLOSED
    assert (sh.core.size, sh.core.connecting) == (0, 0)
    sh.close_all()
    assert sh.core.entries == set()


def test_a_retry_after_close_is_not_due() -> None:
    sh = Shell(min_size=1, max_size=1)
    sh.open(0.0)
    (entry,) = sh.connects
    assert sh.fail(0.0) is not None
    sh.core.close(0.5)
    assert sh.core.retry_due(entry, 1.0) is False
    assert entry.state is CLOSED
    assert sh.core.size == 0


def test_a_ping_ending_after_close_retires_the_entry() -> None:
    sh = Shell(min_size=1, max_size=1, keepalive=1.0)
    (entry,) = sh.fill(0.0)
    sh.core.housekeeping(5.0)
    sh.drain()
    sh.core.close(5.5)
    assert not sh.core.drained  # a ping is still out
    sh.ping_all(6.0, ok=True)
    assert entry.state is CLOSING
    assert sh.core.drained


def test_a_checked_entry_passing_its_check_after_close_is_retired_at_checkin() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=1.0)
    (entry,) = sh.fill(0.0)
    assert sh.core.checkout(5.0) is entry
    sh.core.close(5.1)
    assert not sh.core.drained
    assert sh.core.check_done(entry, True, 5.2) is True
    sh.checkin(entry, 6.0)
    assert entry.state is CLOSING
    assert sh.core.drained


# ---------------------------------------------------------------------------
# terminate


def _busy_pool() -> tuple[Shell, dict[str, Entry]]:
    """Entries leased, resetting, checking, pinging and idle, plus a connect."""
    sh = Shell(min_size=0, max_size=6, max_connecting=6, check_window=5.0, keepalive=5.0)
    sh.open(0.0)
    leased, resetting, to_ping, to_check, idle = sh.lease_all(5, 0.0)
    sh.core.begin_reset(resetting)
    sh.checkin(to_ping, 0.0)
    sh.checkin(to_check, 0.0)
    assert sh.core.checkout(10.0) is to_check  # LIFO, and past check_window
    assert to_check.state is CHECKING
    sh.core.housekeeping(10.0)
    sh.drain()
    assert sh.pings == [to_ping]
    late = sh.acquire(10.0)
    (connecting,) = sh.connects
    sh.core.forget_waiter(late, timed_out=True)  # the connect stays under way
    sh.checkin(idle, 10.0)
    assert idle.state is IDLE
    return sh, {
        "leased": leased,
        "resetting": resetting,
        "checking": to_check,
        "pinging": to_ping,
        "idle": idle,
        "connecting": connecting,
    }


def test_terminate_takes_every_entry_out_or_being_worked_on() -> None:
    sh, e = _busy_pool()
    assert e["resetting"].state is RESETTING
    assert e["pinging"].state is PINGING
    taken = sh.core.terminate(11.0)
    assert set(taken) == {e["leased"], e["resetting"], e["checking"], e["pinging"]}
    assert all(entry.state is CLOSING for entry in taken)
    sh.drain()
    assert sh.closes == [e["idle"]]  # idle ones go through pending as with close()
    assert e["connecting"].state is CONNECTING
    assert sh.core.drained
    assert sh.core.size == 1  # only the connect still under way
    assert sh.core.connecting == 1


def test_terminate_makes_later_checkins_and_pings_no_ops() -> None:
    sh, e = _busy_pool()
    sh.core.terminate(11.0)
    sh.drain()
    before = sh.core.stats()
    sh.core.checkin(e["leased"], 12.0)
    sh.core.checkin(e["resetting"], 12.0)
    sh.core.ping_done(e["pinging"], True, 12.0)
    sh.core.discard(e["leased"], 12.0)
    assert sh.core.stats() == before
    assert sh.core.pending == []
    for name in ("leased", "resetting", "pinging"):
        assert e[name].state is CLOSING
    # The shell closes what terminate() returned; a late checkin is still ignored.
    for name in ("leased", "resetting", "checking", "pinging"):
        sh.core.closed(e[name])
    sh.core.checkin(e["leased"], 13.0)
    assert e["leased"].state is CLOSED
    assert sh.core.connections_closed == 4


@pytest.mark.parametrize("ok", [False, True])
def test_terminate_makes_a_later_check_report_a_no_op_that_voids_the_lease(ok: bool) -> None:
    sh, e = _busy_pool()
    checking = e["checking"]
    sh.core.terminate(11.0)
    # The borrower was checking its connection when the pool was terminated;
    # it reports back afterwards.  terminate() promises that the later report
    # for an entry it took is ignored, and the entry must not be leased.
    assert sh.core.check_done(checking, ok, 12.0) is False
    assert checking.state is CLOSING
    assert sh.core.checks_failed == 0


def test_terminate_on_an_idle_pool_takes_nothing() -> None:
    sh = Shell(min_size=2, max_size=2, max_connecting=2)
    sh.fill(0.0)
    assert sh.core.terminate(1.0) == []
    assert sh.core.drained
    assert len(sh.close_all()) == 2


# ---------------------------------------------------------------------------
# resize


def test_resize_up_grows_at_once_when_waiters_exist() -> None:
    sh = Shell(min_size=0, max_size=1, max_connecting=2)
    sh.open(0.0)
    (held,) = sh.lease_all(1)
    waiters = [sh.acquire(1.0) for _ in range(3)]
    assert sh.in_flight() == 0
    sh.core.resize(0, 3, 2.0)
    assert sh.core.config.max_size == 3
    assert sh.in_flight() == 2
    sh.succeed(3.0)
    served = [w for w in waiters if isinstance(w, Waiter) and w.entry is not None]
    assert served == waiters[:2]
    assert sh.core.size == 3
    assert held.state is IN_USE


def test_resize_up_min_size_fills_the_pool() -> None:
    sh = Shell(min_size=1, max_size=5, max_connecting=5)
    sh.fill(0.0)
    sh.core.resize(4, 5, 1.0)
    assert sh.in_flight() == 3
    sh.succeed(1.0)
    assert len(sh.core.idle) == 4


def test_resize_down_retires_idle_entries_above_max_least_recently_used_first() -> None:
    sh = Shell(min_size=0, max_size=4, max_connecting=4)
    sh.open(0.0)
    entries = sh.lease_all(4)
    for t, entry in enumerate(entries):
        sh.checkin(entry, float(t))
    sh.core.resize(1, 2, 10.0)
    sh.drain()
    assert sh.closes == entries[:2]
    assert sh.core.idle == entries[2:]
    assert sh.core.size == 2
    st = sh.core.stats()
    assert (st.min_size, st.max_size) == (1, 2)


def test_resize_down_retires_leased_entries_above_max_at_checkin() -> None:
    sh = Shell(min_size=0, max_size=3, max_connecting=3)
    sh.open(0.0)
    a, b, c = sh.lease_all(3)
    sh.core.resize(0, 1, 1.0)
    assert sh.core.size == 3
    sh.checkin(a, 2.0)
    assert a.state is CLOSING
    sh.checkin(b, 2.0)
    assert b.state is CLOSING
    sh.checkin(c, 2.0)
    assert c.state is IDLE
    assert sh.core.size == 1


def test_resize_with_bad_bounds_raises_and_keeps_the_old_ones() -> None:
    sh = Shell(min_size=1, max_size=3)
    with pytest.raises(ValueError, match=r"^max_size"):
        sh.core.resize(4, 2, 0.0)
    with pytest.raises(TypeError, match=r"^min_size"):
        sh.core.resize(True, 2, 0.0)
    assert (sh.core.config.min_size, sh.core.config.max_size) == (1, 3)


def test_connects_finishing_after_a_resize_down_do_not_park_idle_above_max_size() -> None:
    sh = Shell(min_size=0, max_size=3, max_connecting=3)
    sh.open(0.0)
    waiters = [sh.acquire(0.0) for _ in range(3)]
    assert sh.in_flight() == 3
    for waiter in waiters:  # they all time out
        sh.core.forget_waiter(waiter, timed_out=True)
    sh.core.resize(0, 1, 1.0)
    sh.succeed(2.0)
    # Nobody wants the connections; the pool may hold at most one of them.
    # (With max_idle=None nothing else would ever close the extra ones.)
    sh.core.housekeeping(1000.0)
    sh.drain()
    assert sh.core.size <= 1
    assert len(sh.core.idle) <= 1
