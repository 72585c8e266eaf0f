"""The pool's statistics: a frozen snapshot with stable field names.

Counters only ever grow, so that a scraper (Prometheus, OpenTelemetry) can
read them at any time without disturbing anyone else who reads them.  What
happened *between* two reads is a subtraction: :meth:`PoolStats.since`
takes an earlier snapshot and gives the difference (psycopg_pool's
``pop_stats()`` resets its counters instead, so only one reader can use it).

The two latency histograms (how long an acquire waited, how long a lease was
held) have fixed buckets, :data:`BUCKETS`, chosen once for all pools: a
record is a bisection and a list increment, and histograms of different
pools add up.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hosts import HostStats

__all__ = ["BUCKETS", "CLOSE_CAUSES", "COUNTERS", "Histogram", "PoolStats"]

#: Upper bounds, in seconds, of the histograms' buckets; one more bucket
#: (``+inf``) takes everything longer.  From 100 µs (a hand-off on a busy
#: pool) to 5 minutes (a lease that looks like a leak).
BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)

#: Why connections are closed, as counted in ``PoolStats.closed_<cause>``:
#: ``lifetime`` (past ``max_lifetime``), ``idle`` (idle past ``max_idle``
#: above ``min_size``), ``broken`` (found dead, or given back broken),
#: ``uses`` (``max_uses``), ``expired`` (``pool.expire()``),
#: ``check_failed`` (a checkout check or a keepalive ping failed), and
#: ``other`` (the pool closing or shrinking, a failed reset, surplus).
CLOSE_CAUSES: tuple[str, ...] = (
    "lifetime", "idle", "broken", "uses", "expired", "check_failed", "other",
)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A latency histogram with fixed buckets (seconds).

    Attributes:
        counts: How many observations fell in each bucket: ``counts[i]``
            are those ``<= BUCKETS[i]`` (and above the bound before); the
            last one counts those above every bound.  Not cumulative.
        sum: The observations' total, in seconds.
        bounds: The buckets' upper bounds, :data:`BUCKETS` (the same for
            every histogram: a class constant).
    """

    counts: tuple[int, ...] = (0,) * (len(BUCKETS) + 1)
    sum: float = 0.0

    bounds = BUCKETS

    @property
    def count(self) -> int:
        """How many observations in all."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= it)`` pairs, ending with ``(inf, count)``.

        What Prometheus' ``_bucket{le=...}`` series carry.
        """
        out, total = [], 0
        for bound, n in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def quantile(self, q: float) -> float:
        """Estimate the ``q`` quantile (``0.99`` for p99) in seconds.

        Linear within the bucket it falls in, so the estimate is off by at
        most that bucket's width; ``0.0`` when nothing was observed.  One
        that falls above the last bound is reported as that bound.

        Raises:
            ValueError: ``q`` is not between 0 and 1.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be between 0 and 1, got {q!r}")
        total = self.count
        if not total:
            return 0.0
        rank = q * total
        seen, low = 0, 0.0
        for bound, n in zip(BUCKETS, self.counts, strict=False):
            if n and seen + n >= rank:
                return low + (bound - low) * max(0.0, rank - seen) / n
            seen += n
            low = bound
        return BUCKETS[-1]

    def since(self, earlier: Histogram) -> Histogram:
        """What was observed after ``earlier`` (a snapshot of the same histogram)."""
        counts = tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True))
        return Histogram(counts, self.sum - earlier.sum)


_EMPTY = Histogram()


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool, taken by ``pool.stats()``.

    Sizes describe this instant; counters grow from the pool's creation and
    never go down.  Times are totals in seconds, so a mean is a division away
    (``wait_time_total / waited_acquires``).  ``later.since(earlier)`` gives
    the counters' growth between two snapshots.

    Attributes:
        min_size: The pool's ``min_size`` now (``resize()`` changes it).
        max_size: The pool's ``max_size`` now.
        size: Connections open or opening (not counting ones being closed).
        idle: Connections idle in the pool.
        in_use: Connections leased, being checked before a lease, or being
            reset after one.
        waiting: Callers queued for a connection.
        connecting: Connects in progress.
        acquires: Acquires that got a connection.
        waited_acquires: Acquires that had to queue.
        timeouts: Acquires that gave up after their ``timeout``.
        too_many_waiters: Acquires refused because ``max_waiting`` callers
            were already queued.
        connections_opened: Connects that succeeded.
        connections_closed: Connections closed, for any cause (the
            ``closed_*`` counters split them).
        connections_lost: Connections found broken (server gone, backend
            terminated, a failed check).
        connections_failed: Connect attempts that failed.
        resets: Releases that needed a reset round trip.
        checks_failed: Health checks (at checkout, or keepalive pings) that
            failed.
        wait_time_total: Seconds acquires spent queued, in all.
        usage_time_total: Seconds leases were held, from acquire to release,
            in all.
        dedicated: Connections open outside the slots (the LISTEN/NOTIFY
            listener's); not counted in ``size``.
        leaks: Leases reported as held past ``leak_timeout``.
        closed_lifetime: Connections closed past ``max_lifetime``.
        closed_idle: Connections above ``min_size`` closed after ``max_idle``.
        closed_broken: Connections closed because they were found dead, or
            given back broken.
        closed_uses: Connections closed after ``max_uses`` leases.
        closed_expired: Connections closed by ``pool.expire()``.
        closed_check_failed: Connections closed after a failed checkout
            check or keepalive ping.
        closed_other: Connections closed for any other cause: the pool
            closing or shrinking, a failed reset, surplus.
        wait_histogram: How long acquires waited (one that found a
            connection idle waited 0), a :class:`Histogram`.
        usage_histogram: How long leases were held, from acquire to release,
            a :class:`Histogram`.
        hosts: One :class:`HostStats` per host, in the order the hosts were
            given; empty for a pool of one host.
    """

    # sizes, now
    min_size: int
    max_size: int
    size: int
    idle: int
    in_use: int
    waiting: int
    connecting: int
    # counters, since creation
    acquires: int
    waited_acquires: int
    timeouts: int
    too_many_waiters: int
    connections_opened: int
    connections_closed: int
    connections_lost: int
    connections_failed: int
    resets: int
    checks_failed: int
    wait_time_total: float
    usage_time_total: float
    # LISTEN/NOTIFY (issue 15)
    dedicated: int
    # observability (issue 15): leaks, closes by cause (see CLOSE_CAUSES),
    # and the wait/usage histograms
    leaks: int = 0
    closed_lifetime: int = 0
    closed_idle: int = 0
    closed_broken: int = 0
    closed_uses: int = 0
    closed_expired: int = 0
    closed_check_failed: int = 0
    closed_other: int = 0
    wait_histogram: Histogram = _EMPTY
    usage_histogram: Histogram = _EMPTY

    # several hosts: one HostStats per host, in the order given (empty with one host)
    hosts: tuple[HostStats, ...] = ()

    def since(self, earlier: PoolStats) -> PoolStats:
        """The counters' growth since ``earlier``; sizes are this snapshot's.

        What psycopg_pool's ``pop_stats()`` reports, without resetting
        anything: keep the last snapshot and subtract it from the next.

        Raises:
            TypeError: ``earlier`` is not a :class:`PoolStats`.
        """
        if not isinstance(earlier, PoolStats):
            raise TypeError(f"earlier must be a PoolStats, not {type(earlier).__name__}")
        changes: dict[str, object] = {
            name: getattr(self, name) - getattr(earlier, name) for name in COUNTERS
        }
        changes["wait_histogram"] = self.wait_histogram.since(earlier.wait_histogram)
        changes["usage_histogram"] = self.usage_histogram.since(earlier.usage_histogram)
        return replace(self, **changes)  # type: ignore[arg-type]


_SIZES = frozenset({"min_size", "max_size", "size", "idle", "in_use", "waiting", "connecting"})
#: The names of :class:`PoolStats`' counters (the fields that never go down).
COUNTERS: tuple[str, ...] = tuple(
    f.name for f in fields(PoolStats)
    if f.name not in _SIZES and f.name != "hosts" and not f.name.endswith("_histogram")
)
