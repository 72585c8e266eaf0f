"""The pool's statistics: a frozen snapshot with stable field names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hosts import HostStats

__all__ = ["PoolStats"]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool, taken by ``pool.stats()``.

    Sizes describe this instant; counters grow from the pool's creation and
    never go down.  Times are totals in seconds, so a mean is a division away
    (``wait_time_total / waited_acquires``).
    """

    # sizes, now
    min_size: int
    max_size: int
    size: int  #: connections open or opening (not counting ones being closed)
    idle: int
    in_use: int  #: leased, being checked before a lease, or being reset after one
    waiting: int  #: callers queued for a connection
    connecting: int
    # counters, since creation
    acquires: int
    waited_acquires: int  #: acquires that had to queue
    timeouts: int
    too_many_waiters: int
    connections_opened: int
    connections_closed: int
    connections_lost: int  #: found broken (server gone, backend terminated, failed check)
    connections_failed: int  #: connect attempts that failed
    resets: int  #: releases that needed a reset round trip
    checks_failed: int
    wait_time_total: float
    usage_time_total: float
    # several hosts: one HostStats per host, in the order given (empty with one host)
    hosts: tuple[HostStats, ...] = ()
