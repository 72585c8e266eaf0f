"""Leak detection, closes by cause and histograms in the core, on a fake clock."""

from __future__ import annotations

import pytest
from coresim import IN_USE, Shell, Waiter

from pgmarina import Histogram
from pgmarina._core.stats import BUCKETS, CLOSE_CAUSES


def _closed(sh: Shell) -> dict[str, int]:
    s = sh.core.stats()
    return {cause: getattr(s, f"closed_{cause}") for cause in CLOSE_CAUSES}


def test_overdue_reports_each_lease_once_and_only_past_leak_timeout() -> None:
    sh = Shell(min_size=2, max_size=2, leak_timeout=10.0, check_window=None)
    sh.fill(0.0)
    a = sh.take(0.0)
    b = sh.take(5.0)
    assert sh.core.overdue(9.99) == []
    assert sh.core.overdue(10.0) == [a]
    assert sh.core.overdue(12.0) == []  # told already
    assert sh.core.overdue(15.0) == [b]
    sh.checkin(a, 16.0)
    again = sh.take(16.0)
    assert again is a  # the hot end: a new lease of the same connection
    assert sh.core.overdue(25.0) == []
    assert sh.core.overdue(26.0) == [a]  # a new lease is a new leak
    assert sh.core.stats().leaks == 3
    assert set(sh.core._leaks_told) <= {a, b}  # over leases are forgotten


def test_overdue_finds_nothing_when_leak_detection_is_off() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=None)
    sh.fill(0.0)
    sh.take(0.0)
    assert sh.core.overdue(1e6) == []
    assert sh.core.stats().leaks == 0


def test_each_rule_that_retires_a_connection_counts_under_its_own_cause() -> None:
    sh = Shell(min_size=1, max_size=3, max_uses=1, max_lifetime=100.0, lifetime_jitter=0.0,
               max_idle=5.0, check_window=None, keepalive=None)
    sh.fill(0.0)
    a, b, c = sh.lease_all(3, 0.0)
    sh.checkin(a, 1.0)  # max_uses=1: retired
    assert _closed(sh)["uses"] == 1
    sh.core.discard(b, 1.0)  # broken
    assert _closed(sh)["broken"] == 1
    sh.core.discard(c, 1.0, lost=False)  # e.g. a failed reset: counted by rule, else other
    assert _closed(sh)["uses"] == 2
    sh.close_all()
    sh.succeed_all(1.0)
    assert sh.core.size == 1


def test_lifetime_idle_expired_and_check_failures_are_told_apart() -> None:
    sh = Shell(min_size=0, max_size=4, max_lifetime=100.0, lifetime_jitter=0.0, max_idle=5.0,
               check_window=None, keepalive=None)
    sh.fill(0.0)
    entries = sh.lease_all(4, 0.0)
    for e in entries:
        sh.checkin(e, 0.0)
    sh.core.housekeeping(10.0)  # idle past max_idle, above min_size 0
    assert _closed(sh)["idle"] == 4
    sh.close_all()
    fresh = sh.lease_all(3, 20.0)
    for e in fresh:
        sh.checkin(e, 20.0)
    sh.core.expire(21.0)
    assert _closed(sh)["expired"] == 3
    sh.close_all()
    old = sh.lease_all(1, 30.0)[0]
    sh.checkin(old, 131.0)  # past its lifetime when it comes back
    assert _closed(sh)["lifetime"] == 1
    checked = Shell(min_size=1, max_size=1, check_window=0.0, keepalive=None)
    (e,) = checked.fill(0.0)
    got = checked.core.checkout(1.0)
    assert got is e
    checked.core.check_done(e, False, 1.0)
    assert _closed(checked)["check_failed"] == 1
    checked.close_all()
    assert sum(_closed(checked).values()) == 1


def test_closing_the_pool_counts_its_idle_connections_as_other() -> None:
    sh = Shell(min_size=2, max_size=2)
    sh.fill(0.0)
    sh.core.close(1.0)
    assert _closed(sh) == {**dict.fromkeys(CLOSE_CAUSES, 0), "other": 2}


def test_waits_and_uses_land_in_their_buckets_and_fast_acquires_waited_zero() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=None)
    sh.fill(0.0)
    a = sh.take(0.0)  # no wait
    waiter = sh.acquire(0.0)
    assert isinstance(waiter, Waiter)
    sh.checkin(a, 0.3)  # held 0.3 s; handed to the waiter after 0.3 s
    assert waiter.entry is a
    sh.checkin(a, 0.3004)  # held 0.4 ms
    s = sh.core.stats()
    waits, uses = s.wait_histogram, s.usage_histogram
    assert waits.count == s.acquires == 2
    assert waits.counts[0] == 1  # the fast one: 0 s
    assert waits.counts[BUCKETS.index(0.5)] == 1
    assert uses.counts[BUCKETS.index(0.5)] == 1
    assert uses.counts[BUCKETS.index(0.0005)] == 1
    assert uses.sum == pytest.approx(0.3004)
    assert s.since(s).wait_histogram.count == 0


def test_a_bound_belongs_to_its_own_bucket_and_longer_ones_to_the_last() -> None:
    sh = Shell(min_size=1, max_size=1, check_window=None, max_lifetime=None)
    (e,) = sh.fill(0.0)
    for held in (0.001, 1e9):
        got = sh.take(10.0)
        assert got is e
        sh.checkin(e, 10.0 + held)
    counts = sh.core.stats().usage_histogram.counts
    assert counts[BUCKETS.index(0.001)] == 1
    assert counts[-1] == 1


def test_quantiles_interpolate_within_a_bucket() -> None:
    counts = [0] * (len(BUCKETS) + 1)
    counts[BUCKETS.index(0.01)] = 100  # 100 observations in (5 ms, 10 ms]
    h = Histogram(tuple(counts), 0.75)
    assert h.quantile(0.5) == pytest.approx(0.0075)
    assert h.quantile(1.0) == pytest.approx(0.01)
    assert Histogram().quantile(0.99) == 0.0
    with pytest.raises(ValueError, match="q must be"):
        h.quantile(1.5)
    assert h.cumulative()[-1] == (float("inf"), 100)


@pytest.mark.parametrize("check_window", [None, 0.0])
def test_a_nudged_waiter_is_recorded_once_even_when_its_connection_is_checked(
    check_window: float | None,
) -> None:
    """Barging (the thread Pool): the woken waiter's acquire reached an observer twice
    when the connection it came for had to be checked first (once as its wait, once
    more as 0 when the check passed)."""
    sh = Shell(min_size=1, max_size=1, barge_window=1.0, check_window=check_window)
    waits: list[float] = []
    uses: list[float] = []
    sh.core.observe(waits.append, uses.append)
    sh.fill(0.0)
    a = sh.core.checkout(0.0)
    assert a is not None
    if a.state is not IN_USE:
        assert sh.core.check_done(a, True, 0.0)
    waiter = sh.acquire(0.1)
    assert isinstance(waiter, Waiter)
    sh.checkin(a, 0.2)  # goes idle; the waiter is nudged
    got = sh.come(waiter, 0.25)
    assert got is a
    if got.state is not IN_USE:
        assert sh.core.check_done(got, True, 0.26)
    s = sh.core.stats()
    assert s.acquires == 2
    assert s.wait_histogram.count == 2
    assert len(waits) == 2
    assert uses == [pytest.approx(0.2)]
    with pytest.raises(RuntimeError, match="already observed"):
        sh.core.observe(waits.append, uses.append)
