"""``idle_order``: which idle connection a checkout takes, on one host and on several."""

from __future__ import annotations

from typing import Any

import pytest
from coresim import CHECKING, IN_USE, Shell
from test_core_hosts import Bed

from pgmarina._core import PoolConfig
from pgmarina._core.hosts import READ_WRITE


def _returned_in_order(order: str) -> tuple[Shell, list[Any]]:
    """Three connections, checked in at 1, 2 and 3 (idle_since 1 < 2 < 3)."""
    sh = Shell(min_size=3, max_size=3, idle_order=order, check_window=None)
    sh.fill(0.0)
    taken = [sh.core.checkout(0.5) for _ in range(3)]
    for at, entry in enumerate(taken, start=1):
        sh.checkin(entry, float(at))
    return sh, taken


def test_lifo_the_default_hands_out_the_most_recently_returned_first() -> None:
    assert PoolConfig().idle_order == "lifo"
    sh, (first, second, third) = _returned_in_order("lifo")
    assert [sh.core.checkout(4.0) for _ in range(3)] == [third, second, first]


def test_fifo_hands_out_the_connection_idle_longest_first_and_rotates() -> None:
    sh, (first, second, third) = _returned_in_order("fifo")
    out = sh.core.checkout(4.0)
    assert out is first and out.state is IN_USE
    sh.checkin(out, 5.0)  # back at the end of the line
    assert [sh.core.checkout(6.0) for _ in range(3)] == [second, third, first]


def test_fifo_still_checks_a_connection_idle_past_check_window() -> None:
    sh = Shell(min_size=2, max_size=2, idle_order="fifo", check_window=2.0)
    sh.fill(0.0)
    a, b = sh.core.checkout(0.0), sh.core.checkout(0.0)
    sh.checkin(a, 1.0)
    sh.checkin(b, 9.0)
    out = sh.core.checkout(9.5)  # a: idle 8.5 s, taken first (b would need no check)
    assert out is a and out.state is CHECKING


def test_several_hosts_follow_idle_order_too() -> None:
    for order, expected in (("lifo", 1), ("fifo", 0)):
        bed = Bed(target="any", min_size=0, max_size=2, idle_order=order, check_window=None)
        for i in range(2):
            bed.core.enqueue_for(f"w{i}", READ_WRITE, 0.0)
        for entry in bed.connecting():
            assert bed.land(entry, False, 0.0)
        entries = [bed.served[w] for w in ("w0", "w1")]
        for at, entry in enumerate(entries, start=1):
            bed.core.checkin(entry, float(at))
        assert bed.core.checkout_for(READ_WRITE, 3.0) is entries[expected], order


@pytest.mark.parametrize(("value", "error"), [("LIFO", ValueError), ("random", ValueError),
                                              (None, TypeError), (1, TypeError)])
def test_idle_order_other_than_lifo_or_fifo_is_refused_naming_it(value: Any, error: type) -> None:
    with pytest.raises(error, match=r"^idle_order must be"):
        PoolConfig(idle_order=value)
