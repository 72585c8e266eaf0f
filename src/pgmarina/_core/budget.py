"""Budget: one cap on the server connections of many pools.

A :class:`Budget` holds ``max_total`` permits.  A pool's core takes one
before it opens a connection and gives it back once that connection is
closed for good (or its connect was given up), so the count covers
connections being opened, open, and being closed: the cap holds at every
instant, not just on average.

The core talks to the budget only where it decides to open or drop a
connection, never on a checkout or a check-in: a pool that has an idle
connection to hand out does not know the budget exists.

When the budget is full
-----------------------
A core that needs a connection for its waiters (not for ``min_size``: under a
budget that is a wish) leaves *claims*, one per connection it lacks, in one
queue shared by every pool: FIFO across pools.  So that a busy pool cannot
keep its connections for its own newer callers for ever, a lease that comes
back while its pool has callers waiting is closed instead when another
pool's claim is older than those callers (:meth:`owed_before`).  Each permit given back goes
to the oldest claim: it is *reserved* for that core, and the core's shell is
poked (``poke(core, GRANT)``) to come and use it (:meth:`PoolCore.granted`);
a reservation the core no longer needs is passed on to the next claim.

Meanwhile the budget tries to free a permit at once: it picks the pool whose
oldest idle connection has sat idle longest (LRU across pools), even one at
or below its ``min_size``, and pokes its shell (``poke(core, RECLAIM)``) to
close that connection (:meth:`PoolCore.yield_idle`).  The shell reports back
with :meth:`reclaimed`.  A claim that found nothing idle is retried on its
core's next housekeeping tick (which calls ``_grow`` and so :meth:`take`),
and sooner by :meth:`retry_reclaims`, which a registry calls every few
milliseconds while claims wait.

Pokes never call into a core: they only schedule work in the victim's or the
claimant's own shell (its event loop, its worker threads), because the caller
holds its own pool's lock and may not take another's.

Locking
-------
The budget is shared by pools on different threads (or event loops).  The
shell side passes a lock (``threading.Lock()``); every public method runs
under it.  Lock order: a pool's lock, then the budget's; never the reverse
(pokes only schedule).  The budget reads other cores' idle lists without
their locks, as a hint: a stale read costs one wasted reclaim.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pool import PoolCore

__all__ = ["GRANT", "RECLAIM", "Budget", "BudgetStats"]

#: ``poke`` words: a permit is reserved for this core; close an idle connection.
GRANT, RECLAIM = "grant", "reclaim"

Poke = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """A snapshot of a budget.

    Attributes:
        max_total: The cap.
        used: Permits held now: connections opening, open or closing, plus
            permits reserved for a pool that was poked to use them.
        claims: Connections pools wait for because the budget is full.
        grants: Permits handed to a waiting pool since creation.
        reclaims: Idle connections other pools were asked to close.
    """

    max_total: int
    used: int
    claims: int
    grants: int
    reclaims: int


class Budget:
    """``max_total`` connection permits shared by the cores that join it.

    Args:
        max_total: The most connections all member pools may hold at once.
        lock: A context manager guarding the budget (the shell's business; a
            core test may leave it out).

    Raises:
        TypeError, ValueError: ``max_total`` is not an int >= 1.
    """

    def __init__(self, max_total: int, *, lock: Any = None) -> None:
        if isinstance(max_total, bool) or not isinstance(max_total, int):
            raise TypeError(f"max_total must be an int, not {type(max_total).__name__}")
        if max_total < 1:
            raise ValueError(f"max_total must be >= 1, got {max_total!r}")
        self.max_total = max_total
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self.used = 0  # guarded by _lock, as is everything below
        self._pokes: dict[PoolCore[Any], Poke] = {}  # members
        # One item per connection lacked: (core, when it was claimed).
        self._claims: deque[tuple[PoolCore[Any], float]] = deque()
        self._claimed: dict[PoolCore[Any], int] = {}  # live items per core in _claims
        self._reserved: dict[PoolCore[Any], int] = {}
        self._reclaiming: dict[PoolCore[Any], int] = {}  # pokes sent to each victim
        self.grants = 0
        self.reclaims = 0
        #: Called (under the lock: it must only schedule) when a claim found
        #: nothing idle to reclaim, so the registry retries soon; see
        #: :meth:`retry_reclaims`.
        self.on_starved: Callable[[], object] | None = None

    # ------------------------------------------------------------------
    # membership

    def join(self, core: PoolCore[Any], poke: Poke) -> None:
        """Make ``core`` draw its permits here; ``poke(word)`` schedules work
        in its shell (see the module doc).  Call before the pool opens."""
        with self._lock:
            self._pokes[core] = poke
            core.permits = self

    def leave(self, core: PoolCore[Any]) -> None:
        """``core`` closes: drop its claims, pass its reservations on.

        Its connections still give their permits back as they close.
        """
        with self._lock:
            self._pokes.pop(core, None)
            self._claimed.pop(core, None)
            self._reclaiming.pop(core, None)
            self.used -= self._reserved.pop(core, 0)
            self._settle()

    # ------------------------------------------------------------------
    # what a core calls

    def take(self, core: PoolCore[Any], needed: int, now: float = 0.0) -> bool:
        """A permit for one new connection of ``core``, if there is one.

        ``needed``: connections ``core`` lacks for its waiters, this one
        included (``<= 0``: it only wants to reach ``min_size``).  When
        refused with ``needed > 0``, the core's claims are topped up to
        ``needed`` (stamped ``now``) and an idle connection of another pool
        is reclaimed.
        """
        with self._lock:
            reserved = self._reserved.get(core, 0)
            if reserved:
                self._reserved[core] = reserved - 1
                return True
            # Free permits and queued claims never coexist (see _settle), so
            # a free permit here passes nobody.
            if self.used < self.max_total:
                self.used += 1
                return True
            if needed > 0 and core in self._pokes:
                have = self._claimed.get(core, 0)
                if needed > have:
                    self._claims.extend([(core, now)] * (needed - have))
                    self._claimed[core] = needed
                if not self._reclaim(core) and self.on_starved is not None:
                    # A hint only: a registry whose loop is gone must not
                    # fail the pool's connect decision.
                    with contextlib.suppress(Exception):
                        self.on_starved()
            return False

    def release(self, core: PoolCore[Any]) -> None:
        """A connection of ``core`` is closed, or its connect given up."""
        with self._lock:
            self.used -= 1
            self._settle()

    def unreserve(self, core: PoolCore[Any]) -> None:
        """``core`` used what it needed of its reservations; pass on the rest."""
        with self._lock:
            left = self._reserved.pop(core, 0)
            if left:
                self.used -= left
                self._settle()

    def reclaimed(self, core: PoolCore[Any], ok: bool) -> None:
        """``core``'s shell carried out a RECLAIM poke; ``ok``: it closed one."""
        with self._lock:
            n = self._reclaiming.get(core, 0)
            if n > 1:
                self._reclaiming[core] = n - 1
            else:
                self._reclaiming.pop(core, None)
            if not ok and self._claims:
                self._reclaim(None)

    # ------------------------------------------------------------------

    def _settle(self) -> None:
        """Hand free permits to the oldest claims (caller holds the lock)."""
        while self.used < self.max_total and self._claims:
            core, _ = self._claims.popleft()
            n = self._claimed.get(core, 0)
            if n <= 0:
                continue  # a claim of a core that left or was served meanwhile
            if n == 1:
                del self._claimed[core]
            else:
                self._claimed[core] = n - 1
            self.used += 1
            self._reserved[core] = self._reserved.get(core, 0) + 1
            self.grants += 1
            self._send(core, GRANT)

    def retry_reclaims(self) -> int:
        """Reclaim for the claims still waiting; returns the pokes sent.

        A claim that found nothing idle is otherwise retried on its pool's
        next housekeeping tick; a registry calls this more often while
        claims wait (:attr:`waiting`), so that a connection that went idle
        since is found sooner.
        """
        with self._lock:
            sent = 0
            while self._claims and self._reclaim(None):
                sent += 1
            return sent

    def owed_before(self, core: PoolCore[Any], since: float) -> bool:
        """Whether another pool has claimed a permit before ``since``.

        ``core`` asks when a lease comes back while its own callers wait
        (queued since ``since``, the oldest): if another pool's caller has
        waited longer, fairness across pools says the connection should be
        closed so that its permit goes there (see ``PoolCore.checkin``).
        """
        with self._lock:
            for other, claimed_at in self._claims:
                if other is core or self._claimed.get(other, 0) <= 0:
                    continue
                return claimed_at < since
            return False

    @property
    def waiting(self) -> bool:
        """Some pool waits for a permit (a hint, read without the lock)."""
        return bool(self._claims)

    def make_room(self) -> bool:
        """A dedicated connection (a listener's) found no free permit.

        Close the longest-idle connection of any member pool, so that a
        permit comes free for its next try.  It makes no claim (it does not
        queue with the pools' callers), and asks nothing while callers' claims
        or reclaims are under way: those are owed first.  Returns whether it
        asked.
        """
        with self._lock:
            if self._claims or self._reclaiming:
                return False
            return self._reclaim(None, owed=False)

    def _reclaim(self, claimant: PoolCore[Any] | None, *, owed: bool = True) -> bool:
        """Ask the pool with the longest-idle connection to close it (lock held).

        At most one reclaim is in flight per claim outstanding: more would
        close connections nobody is going to get (``owed=False``: the
        caller checked that none is in flight).  Returns whether it asked.
        """
        if owed and sum(self._reclaiming.values()) >= len(self._claims):
            return False
        victim = None
        oldest = float("inf")
        for core in self._pokes:
            if core is claimant:
                continue
            try:
                since = core.idle[0].idle_since - 0.0  # a hint; see the module doc
            except IndexError:
                continue
            # A core already asked counts its pending reclaims as gone.
            if self._reclaiming.get(core, 0) >= len(core.idle):
                continue
            if since < oldest:
                victim, oldest = core, since
        if victim is None:
            return False
        self._reclaiming[victim] = self._reclaiming.get(victim, 0) + 1
        self.reclaims += 1
        self._send(victim, RECLAIM)
        return True

    def _send(self, core: PoolCore[Any], word: str) -> None:
        poke = self._pokes.get(core)
        if poke is None:
            return
        try:
            poke(word)
        except Exception:
            # Its loop or workers are gone: it is closing, and leave() follows.
            if word == RECLAIM:
                self._reclaiming.pop(core, None)

    def stats(self) -> BudgetStats:
        """A frozen snapshot (see :class:`BudgetStats`)."""
        with self._lock:
            return BudgetStats(
                max_total=self.max_total,
                used=self.used,
                claims=sum(self._claimed.values()),
                grants=self.grants,
                reclaims=self.reclaims,
            )

    def __repr__(self) -> str:
        s = self.stats()
        return f"<Budget {s.used}/{s.max_total} used, {s.claims} claims>"
