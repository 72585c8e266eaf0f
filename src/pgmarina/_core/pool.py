"""PoolCore: the state machine that owns every pool decision.

Everything that decides who gets which connection, when one is opened,
checked, reset, replaced or closed, lives in this module.  It never performs
IO, never reads a clock and never takes a lock: each method is an event
("a caller wants a connection", "this connect failed", "this lease came
back") stamped with the caller's ``now``, and its effect is written into
plain data the shell reads afterwards.

How a shell drives it
---------------------
*Checkout.*  ``checkout(now)`` pops the most recently used idle entry (a
stack: hot connections stay hot and cold ones age out) and returns it leased,
or returns it in ``CHECKING`` when it sat idle longer than ``check_window``:
the borrower pings it and reports with ``check_done()``.  Entries past their
lifetime or from an old generation are retired on the way.  ``None`` means
"nothing to hand out now": the shell then calls ``enqueue(waiter, now)``,
which either refuses (closed, ``max_waiting``, fail fast) or queues the
waiter and decides whether to open connections for it.

*Hand-off.*  Whenever a usable entry appears (a lease comes back, a connect
succeeds, a ping succeeds) the core offers it to the waiters in strict FIFO
order through the ``wake(waiter, entry)`` callable the shell supplied.  The
shell answers ``False`` when that waiter already gave up (timed out,
cancelled); the core then drops that waiter and offers the entry to the
next.  Only when no live waiter is left does the entry go idle.  So a
connection is never parked while somebody waits for one, and a waiter that
left never swallows one.

*Barging* (``barge_window > 0``).  A lease that comes back goes idle
instead and the oldest waiter is woken with ``wake(waiter, None)``: "come
and take one".  (A fresh or just-pinged entry is handed over as above: no
borrower is coming back for it.)
Until it does, any caller's ``checkout`` may take the entry first.  The woken
waiter calls ``checkout_nudged``, which serves it or puts it back at the
head of the queue.  Only one woken waiter is out at a time (each wake-up
costs a thread switch, and most would find the entry already taken); when
it is served and more entries sit idle, it passes the nudge on.  Once the
oldest waiter has waited ``barge_window``, checkouts queue and hand-off is
strict again.

*Work.*  Decisions that need IO are appended to ``pending`` as entries whose
state says what to do: ``CONNECTING`` (open it), ``CLOSING`` (close it),
``PINGING`` (ping it for housekeeping).  The shell drains ``pending`` after
each call, outside any lock, and reports back with ``connect_succeeded`` /
``connect_failed``, ``closed``, ``ping_done``.

*Outages.*  A failed connect records the error and returns a retry delay
(exponential backoff with jitter, starting at ``backoff_initial`` so that a
restarted server is noticed within tens of milliseconds, capped at
``backoff_max``).  While failing, at most one connect is in flight, so an
outage never turns into a connect storm.  Waiters keep waiting up to their
own timeout and are served as soon as a connect succeeds; once the pool has
been failing for ``fail_fast_after``, new callers that would have to wait are
refused at once with the last connect error instead of piling up.  With
``fail_fast_waiters`` the callers already queued are refused too, at the
first failed connect after that (asyncpg's pool fails an acquire with the
error of the connect it needed; its façade sets this).

*Rejections.*  Some connect errors do not pass by waiting: a wrong password,
a role or database that does not exist.  The shell asks its adapter and
reports such a failure with ``permanent=True``.  Then the queued waiters are
failed at once (through the ``refuse(waiter, error)`` callable the shell
supplied) and so is every new caller that would have to wait, with the
server's own words, instead of waiting out an outage that is not one.  The
pool still keeps one connect retrying, every ``backoff_max``, even when
nobody asks: a rotated password or a database created later is picked up,
and callers are served again as soon as a connect succeeds.  The last
attempt decides: a transient failure after a rejection (the server is
restarting) turns the pool back to riding out an outage.

*Hook failures.*  A connect whose ``configure`` hook raised (the shell says
so with ``configured=False``) is a failed connect like any other: the entry
backs off and retries while it is wanted.  With ``configure_fails_waiter``
the caller that has waited longest is also refused, with the hook's error
as the cause: the connect was made for it, and asyncpg's pool fails the
acquire whose ``init`` raised (its façade sets this).  Callers behind it
keep waiting for the next attempt.

Several hosts
-------------
With a :class:`~pgmarina._core.hosts.HostBook` (``hosts``), each connect
goes to a host the book picks (``aim``, before each attempt), a failed one
puts that host in a backoff of its own, and a successful one reports the
server's role (``connect_landed``).  Every entry knows its host, and so its
role.  Callers may ask for a role (``checkout_for``/``enqueue_for`` with
``READ_WRITE`` or ``READ_ONLY``); hand-offs then go to the oldest waiter the
entry serves, not simply the oldest (no barging).  A change of role (a
promotion) retires what no longer fits and hands the rest out anew.  A
single-host pool has ``hosts=None`` and none of this runs: its hot paths
are untouched.

Counters
--------
Only two counts steer decisions and are kept incrementally: ``size``
(entries not closing or closed, connecting ones included) and
``connecting``.  Everything else ``stats()`` counts by walking the entries,
which keeps the hot path (checkout/checkin of a healthy connection) down to
a list pop, a few comparisons and a list push.
"""

from __future__ import annotations

import contextlib
import random
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Generic, TypeVar

from .._redact import redact
from ..errors import IllegalTransition, PoolClosed, PoolConnectError, TooManyWaiters
from .budget import Budget
from .config import PoolConfig
from .entry import (
    ALLOWED,
    CHECKING,
    CLOSED,
    CLOSING,
    CONNECTING,
    IDLE,
    IN_USE,
    PINGING,
    RESETTING,
    Entry,
    EntryState,
)
from .hosts import PRIMARY, READ_ONLY, READ_WRITE, STANDBY, Host, HostBook, HostStats
from .stats import BUCKETS, CLOSE_CAUSES, Histogram, PoolStats

__all__ = ["PoolCore"]

W = TypeVar("W")

_BUSY = frozenset({CHECKING, IN_USE, RESETTING})
_INF = float("inf")
_GONE = frozenset({CLOSING, CLOSED})


class PoolCore(Generic[W]):
    """Sizing, waiters, lifetimes, backoff and housekeeping for one pool.

    Args:
        config: The pool's settings.
        wake: ``wake(waiter, entry) -> bool`` hands ``entry`` (already leased)
            to ``waiter``, or with ``entry=None`` asks it to come and take an
            idle one (barging; see ``checkout_nudged``); it returns ``False``
            if that waiter is gone.  It must not change the core's state.
        refuse: ``refuse(waiter, error) -> bool`` fails a queued waiter with
            ``error`` (a ``PoolConnectError``) when the server rejects the
            pool's connects, or a connect's ``configure`` hook failed for it;
            the waiter is already out of the queue.  It returns ``False`` if
            that waiter is gone, and must not change the core's state.
            Without it, such waiters wait out their own timeout.
        rand: Source of jitter in ``[0, 1)``; tests pass a fixed one.
        hosts: The hosts of a pool over several servers (see *Several
            hosts* below); ``None`` for one server, where none of it runs.

    Attributes (read by shells, written only here):
        idle: Idle entries, least recently used first.
        waiters: Queued waiters, oldest first.
        pending: Entries whose state asks the shell for IO (see module doc).
        size: Entries that are neither closing nor closed.
        connecting: Entries whose connect is under way (or backing off).
        closing: ``close()`` was called; nothing more is handed out.
        name: How errors name the pool.
    """

    # Slots: a pool's state is read on every acquire and release, and an
    # instance with more than 30 attributes in its ``__dict__`` loses part of
    # CPython's fast attribute access (measured: a checkout and a check-in
    # took 357 ns with a dict, 300 ns with slots).  ``__dict__`` is kept for
    # ``observe()``, which puts wrappers on the instance.
    __slots__ = (
        "__dict__",
        "_attempt",
        "_barge_window",
        "_check_window",
        "_keep_cap",
        "_leaks_told",
        "_max_size",
        "_max_uses",
        "_max_waiting",
        "_next_id",
        "_nudged_since",
        "_on_use",
        "_on_wait",
        "_queued_at",
        "_rand",
        "_reconnect_failed_told",
        "_refuse",
        "_use_counts",
        "_wait_counts",
        "_wake",
        "_wants",
        "_woken",
        "acquires",
        "checks_failed",
        "closed_by",
        "closing",
        "config",
        "connecting",
        "connections_closed",
        "connections_failed",
        "connections_lost",
        "connections_opened",
        "dedicated",
        "entries",
        "failing_since",
        "generation",
        "hosts",
        "idle",
        "last_connect_error",
        "leaks",
        "name",
        "opened",
        "pending",
        "permits",
        "rejection",
        "resets",
        "size",
        "timeouts",
        "too_many_waiters",
        "usage_time_total",
        "wait_time_total",
        "waited_acquires",
        "waiters",
    )

    def __init__(
        self,
        config: PoolConfig,
        wake: Callable[[W, Entry | None], bool],
        *,
        refuse: Callable[[W, PoolConnectError], bool] | None = None,
        rand: Callable[[], float] = random.random,
        hosts: HostBook | None = None,
    ) -> None:
        self.hosts = hosts
        #: What each routed waiter asked for (READ_WRITE, READ_ONLY); several hosts only.
        self._wants: dict[W, str] = {}
        self.config = config
        self._wake = wake
        self._refuse = refuse
        self._rand = rand
        self.name = "the pool"  # the shell sets its pool's name, for errors
        self.idle: list[Entry] = []
        self.waiters: deque[W] = deque()
        self._queued_at: deque[float] = deque()  # when each waiter queued
        self._woken = 0  # waiters nudged and not yet come back (barging)
        self._nudged_since = 0.0  # when the one nudged waiter first queued
        self.pending: list[Entry] = []
        self.entries: set[Entry] = set()
        self.generation = 0
        self.opened = False
        self.closing = False
        self.size = 0
        self.connecting = 0
        self._next_id = 0
        #: The :class:`~pgmarina._core.budget.Budget` this pool draws its
        #: connections from, in a registry (``None``: no cap but its own).
        #: Asked only where a connection is opened or dropped.
        self.permits: Budget | None = None
        self._apply_config(config)
        # connect failures
        self.failing_since: float | None = None
        #: The error of the last failed connect, while connects fail (``None``
        #: once one succeeds): the ``__cause__`` of the errors callers get.
        self.last_connect_error: BaseException | None = None
        #: The last connect was rejected for good (see *Rejections*): callers
        #: that would wait are refused with it until a connect succeeds.
        self.rejection: BaseException | None = None
        self._attempt = 0
        self._reconnect_failed_told = False
        # counters
        self.acquires = 0
        self.waited_acquires = 0
        self.timeouts = 0
        self.too_many_waiters = 0
        self.connections_opened = 0
        self.connections_closed = 0
        self.connections_lost = 0
        self.connections_failed = 0
        self.resets = 0
        self.checks_failed = 0
        self.wait_time_total = 0.0
        self.usage_time_total = 0.0
        # LISTEN/NOTIFY (issue 15): connections the pool holds outside its
        # slots (the listener's); the listener counts its own in and out.
        self.dedicated = 0
        # observability: leaks, closes by cause, histograms (see stats.py)
        self.leaks = 0
        self.closed_by = dict.fromkeys(CLOSE_CAUSES, 0)
        #: Waits of queued acquires, by bucket; an acquire served at once
        #: is not recorded (it costs the fast path nothing): stats() puts
        #: those in the first bucket.
        self._wait_counts = [0] * (len(BUCKETS) + 1)
        self._use_counts = [0] * (len(BUCKETS) + 1)
        #: Leases already reported as leaked: entry -> its lease's start.
        self._leaks_told: dict[Entry, float] = {}
        #: Per-event recorders set by ``observe()`` (``None``: nobody listens).
        self._on_wait: Callable[[float], None] | None = None
        self._on_use: Callable[[float], None] | None = None

    def _apply_config(self, config: PoolConfig) -> None:
        # Hot-path settings are copied to plain attributes: one lookup each.
        self.config = config
        self._check_window = config.check_window
        self._max_uses = config.max_uses
        self._max_size = config.max_size
        self._max_waiting = config.max_waiting
        #: Where checkouts take from the idle list, whose end is the most
        #: recently used: -1, its end ("lifo"); 0, its start ("fifo").
        self._take_at = -1 if config.idle_order == "lifo" else 0
        # Routed hand-offs pick their waiter by role; a nudge could not.
        self._barge_window = 0.0 if self.hosts is not None else config.barge_window
        # Connections beyond this many are not kept idle: ``max_size``, or
        # ``min_size`` when ``max_idle`` is 0 (none above it may sit idle).
        self._keep_cap = config.min_size if config.max_idle == 0 else config.max_size
        #: Connections the pool opens ahead of demand: ``min_size``, or none
        #: without ``prefill`` (then ``min_size`` only bounds what is kept).
        self.fill_target = config.min_size if config.prefill else 0

    # ------------------------------------------------------------------
    # transitions

    def _move(self, entry: Entry, new: EntryState) -> None:
        """Move ``entry`` to ``new``, keeping ``size`` and ``connecting`` true.

        The hot paths (IDLE <-> IN_USE) set ``entry.state`` directly because
        those moves change neither count; everything else comes through here.
        """
        old = entry.state
        if new not in ALLOWED[old]:
            raise IllegalTransition(f"{entry!r} cannot go from {old.value} to {new.value}")
        if old is CONNECTING:
            self.connecting -= 1
        if new in _GONE and old not in _GONE:
            self.size -= 1
        entry.state = new

    def _new_entry(self) -> Entry:
        self._next_id += 1
        entry = Entry(self._next_id, self.generation)
        self.entries.add(entry)
        self.size += 1
        self.connecting += 1
        return entry

    def _retire(self, entry: Entry, now: float, cause: str | None = None) -> None:
        """Send ``entry`` to be closed (caller took it off the idle stack).

        ``cause``: why, for the ``closed_<cause>`` counters (one of
        ``CLOSE_CAUSES``); by default, what :meth:`_why` finds.
        """
        cause = cause or self._why(entry, now)
        self._move(entry, CLOSING)
        self.closed_by[cause] += 1
        self.pending.append(entry)
        self._grow(now)

    def _why(self, entry: Entry, now: float) -> str:
        """Which of the pool's rules retires a usable entry (see ``CLOSE_CAUSES``)."""
        if entry.generation != self.generation:
            return "expired"
        if entry.expires_at <= now:
            return "lifetime"
        if self._max_uses and entry.uses >= self._max_uses:
            return "uses"
        return "other"

    def _lease(self, entry: Entry, now: float) -> None:
        entry.state = IN_USE
        entry.uses += 1
        entry.acquired_at = now
        self.acquires += 1

    def _give(self, entry: Entry, now: float, returned: bool = False) -> None:
        """Offer a usable entry to the oldest live waiter, else make it idle.

        ``entry`` is counted in ``size`` and not in ``connecting``.
        ``returned``: it is a lease that just came back.  Only such an entry
        is left for barging (its borrower may be back for it at once); a
        fresh or just-checked one has nobody coming for it, so it goes to the
        waiter, which is woken either way, without a health check.
        """
        if self.hosts is not None:
            self._give_routed(entry, now)
            return
        waiters = self.waiters
        queued_at = self._queued_at
        window = self._barge_window if returned else 0.0
        while waiters:
            if window and self._may_barge(now):
                entry.state = IDLE
                entry.idle_since = now
                self.idle.append(entry)
                self._nudge()
                return
            waiter = waiters.popleft()
            since = queued_at.popleft()
            # _lease, inline: once per hand-off.
            entry.state = IN_USE
            entry.uses += 1
            entry.acquired_at = now
            if self._wake(waiter, entry):
                self.acquires += 1
                waited = now - since
                self.wait_time_total += waited
                self._wait_counts[bisect_left(BUCKETS, waited)] += 1
                if self._on_wait is not None:
                    self._on_wait(waited)
                return
            entry.uses -= 1
        entry.state = IDLE
        entry.idle_since = now
        self.idle.append(entry)

    def _nudge(self) -> None:
        """Wake the oldest live waiter to come for an idle entry (barging),
        unless one is already on its way or nothing is idle."""
        if self._woken or not self.idle:
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            since = self._queued_at.popleft()
            if self._wake(waiter, None):
                self._woken += 1
                self._nudged_since = since
                return

    def _expired(self, entry: Entry, now: float) -> bool:
        return entry.expires_at <= now or entry.generation != self.generation

    # ------------------------------------------------------------------
    # lifecycle

    def open(self, now: float) -> None:
        """Start filling the pool up to ``min_size``."""
        if self.closing:
            raise PoolClosed(f"{self.name} is closed and cannot be reopened")
        if not self.opened:
            self.opened = True
            self._grow(now)

    def close(self, now: float) -> list[W]:
        """Stop handing out; retire idle entries; return the waiters to fail.

        Leased entries are retired as they come back; connecting ones when
        their connect ends (the shell may also cancel those connects and report
        them with ``connect_aborted``).
        """
        self.closing = True
        if self.permits is not None:
            self.permits.leave(self)
        waiters = list(self.waiters)
        self.waiters.clear()
        self._wants.clear()
        self._queued_at.clear()
        idle, self.idle = self.idle, []
        for entry in idle:
            self._move(entry, CLOSING)
            self.pending.append(entry)
        self.closed_by["other"] += len(idle)
        return waiters

    def terminate(self, now: float) -> list[Entry]:
        """``close()``, then take back every entry still out or being worked on.

        Returns the entries whose connections the shell must close at once
        (leased, checking, resetting, pinging).  Their later check-in is ignored.
        """
        self.close(now)
        taken = []
        for entry in list(self.entries):
            if entry.state not in _GONE and entry.state is not CONNECTING:
                self._move(entry, CLOSING)
                taken.append(entry)
        self.closed_by["other"] += len(taken)
        return taken

    @property
    def drained(self) -> bool:
        """No entry is leased, being checked, reset or pinged."""
        return not any(e.state in _BUSY or e.state is PINGING for e in self.entries)

    # ------------------------------------------------------------------
    # checkout

    def checkout(self, now: float) -> Entry | None:
        """Hand out an idle entry, or ``None`` when the caller must queue.

        Returns the entry in ``IN_USE`` (ready) or in ``CHECKING`` (sat idle
        past ``check_window``: check it, then report ``check_done``).  While
        anyone is queued, newcomers queue behind them: strict FIFO.
        """
        if (self.waiters or self._woken) and not (self._barge_window and self._may_barge(now)):
            return None
        idle = self.idle
        if idle:
            # The common case inline: the next out is fresh and needs no check.
            take = self._take_at
            entry = idle[take]
            window = self._check_window
            if (
                entry.expires_at > now
                and entry.generation == self.generation
                and (window is None or now - entry.alive_at <= window)
            ):
                if take:
                    idle.pop()
                else:
                    del idle[0]
                entry.state = IN_USE
                entry.uses += 1
                entry.acquired_at = now
                self.acquires += 1
                return entry
        return self._take_idle(now)

    def _take_idle(self, now: float) -> Entry | None:
        idle = self.idle
        take = self._take_at
        while idle:
            entry = idle.pop(take)
            if entry.expires_at <= now or entry.generation != self.generation:
                self._retire(entry, now)
                continue
            window = self._check_window
            if window is not None and now - entry.alive_at > window:
                entry.state = CHECKING
                entry.acquired_at = now
                return entry
            self._lease(entry, now)
            return entry
        return None

    def check_done(
        self, entry: Entry, ok: bool, now: float, *, borrower_left: bool = False
    ) -> bool:
        """Report a checkout health check; ``True`` means the lease stands.

        ``borrower_left``: the caller it was for gave up (its deadline came
        first) while the check ran on.  A check that passes then keeps the
        connection: it goes to the oldest waiter, or back to the idle stack.

        An entry taken by ``terminate()`` meanwhile is ignored (``False``).
        """
        if entry.state in _GONE:
            return False
        if entry.state is not CHECKING:
            raise IllegalTransition(f"{entry!r} was not being checked")
        if ok and self.hosts is not None and self._expired(entry, now):
            # Its host changed role while it was checked (``role_seen``) and
            # the pool no longer connects to that role.
            self._retire(entry, now)
            return False
        if ok:
            entry.alive_at = now
            if borrower_left:
                if (
                    self.closing
                    or self._expired(entry, now)
                    or (self.size > self._keep_cap and not self.waiters)
                ):
                    self._retire(entry, now)
                else:
                    self._give(entry, now)
                return False
            self._lease(entry, now)
            if self._on_wait is not None:
                self._on_wait(0.0)  # checked, not queued
            return True
        self.checks_failed += 1
        self.connections_lost += 1
        self._retire(entry, now, "check_failed")
        return False

    def enqueue(self, waiter: W, now: float) -> None:
        """Queue ``waiter``, or refuse it at once.

        Raises:
            PoolClosed: the pool is closing.
            TooManyWaiters: ``max_waiting`` callers already wait.
            PoolConnectError: the server rejected the last connect (wrong
                password, no such role or database), or the pool has failed
                to connect for longer than ``fail_fast_after`` and is still
                trying.
        """
        if self.closing:
            raise PoolClosed(f"{self.name} is closed")
        limit = self._max_waiting
        if limit and len(self.waiters) + self._woken >= limit:
            self.too_many_waiters += 1
            raise TooManyWaiters(
                f"{self.name}: {len(self.waiters) + self._woken} callers already wait for a "
                "connection "
                f"(max_waiting={limit})"
            )
        if self.failing_since is not None:
            why = self.connect_refusal(now)
            if why is not None:
                raise PoolConnectError(f"{self.name}: {why}") from self.last_connect_error
        self.waiters.append(waiter)
        self._queued_at.append(now)
        self.waited_acquires += 1
        if self.hosts is not None:
            self._route(now)
        elif self.size < self._max_size:
            self._grow(now)

    def queue(self) -> list[tuple[W, float]]:
        """The queued waiters with the time each queued (what ``enqueue``
        was given), oldest first: a copy."""
        return list(zip(self.waiters, self._queued_at, strict=True))

    def count_timeout(self) -> None:
        """A caller gave up waiting for a connection that was not yet ready."""
        self.timeouts += 1

    def _failing_fast(self, since: float, now: float) -> bool:
        after = self.config.fail_fast_after
        return bool(self.connecting) and after is not None and now - since >= after

    def connect_refusal(self, now: float) -> str | None:
        """Why a caller who would have to wait is refused at once, if it is.

        It is while the server rejects the pool's connects (see
        *Rejections*), and once the pool has failed to connect for
        ``fail_fast_after`` with a connect still trying.  ``None``: wait.
        """
        if self.rejection is not None:
            return self._rejected_message()
        since = self.failing_since
        if since is not None and self._failing_fast(since, now):
            return self._fail_fast_message(now)
        return None

    def _fail_fast_message(self, now: float) -> str:
        since = self.failing_since
        assert since is not None
        return (
            f"cannot connect to the server: failing for {now - since:.1f}s; "
            f"last error: {_describe(self.last_connect_error)}"
        )

    def _rejected_message(self) -> str:
        return (
            f"the server rejected the pool's connection: {_describe(self.rejection)}; "
            f"callers fail at once until a connect succeeds "
            f"(retried every {self.config.backoff_max:g}s)"
        )

    def forget_waiter(self, waiter: W, *, timed_out: bool = False, nudged: bool = False) -> None:
        """Take a waiter that gave up out of the queue (no-op if already out).

        ``nudged``: it was woken with ``wake(waiter, None)`` and leaves without
        coming for its entry, so the next waiter is woken in its stead.
        """
        with contextlib.suppress(ValueError):
            at = self.waiters.index(waiter)
            del self.waiters[at]
            del self._queued_at[at]
        if self._wants:
            self._wants.pop(waiter, None)
        if timed_out:
            self.timeouts += 1
        if nudged:
            self._woken -= 1
            self._nudge()

    def _may_barge(self, now: float) -> bool:
        """Whether a checkout may pass the waiters (only while barging).

        The oldest waiter may be the nudged one, out of the queue for now.
        """
        window = self._barge_window
        if not window:
            return False
        oldest = self._queued_at[0] if self._queued_at else now
        if self._woken and self._nudged_since < oldest:
            oldest = self._nudged_since
        return now - oldest < window

    def checkout_nudged(self, waiter: W, since: float, now: float) -> Entry | None:
        """A waiter woken with ``wake(waiter, None)`` comes for its entry.

        ``since`` is when it first queued.  Returns an entry as ``checkout``
        does, queue or no queue (the waiter was at its head).  ``None`` means
        another caller took the idle entry first: ``waiter`` is queued again
        at the head, where it was.

        Raises:
            PoolClosed: the pool closed meanwhile.
        """
        self._woken -= 1
        if self.closing:
            raise PoolClosed(f"{self.name} is closed")
        entry = self._take_idle(now)
        if entry is None:
            self.waiters.appendleft(waiter)
            self._queued_at.appendleft(since)
            if self.size < self._max_size:
                self._grow(now)
            return None
        waited = now - since
        self.wait_time_total += waited
        if entry.state is IN_USE:
            # Leased now (one being checked is counted by check_done, as 0):
            # every acquire lands in the histogram once.
            self._wait_counts[bisect_left(BUCKETS, waited)] += 1
            if self._on_wait is not None:
                self._on_wait(waited)
        self._nudge()  # if more sit idle, pass the nudge on
        return entry

    def timeout_message(self, waited: float) -> str:
        """Words for a ``PoolTimeout``: how long, and why nothing came."""
        msg = f"no connection available after waiting {waited:.2g}s"
        hosts = "" if self.hosts is None else self._hosts_now()
        if self.failing_since is not None:
            return msg + self.connect_trouble() + hosts
        # Connects in flight count in size: a slow server is not a busy pool.
        n = self.connecting
        if not n:
            what = "all in use"
        else:
            what = f"{n} connect{'s' if n > 1 else ''} under way"
            if n < self.size:
                what += ", the rest in use"
        return msg + f" (size={self.size}, max_size={self.config.max_size}, {what})" + hosts

    def _hosts_now(self) -> str:
        """``"; hosts: h1:5432 primary, h2:5432 down"``: what a multi-host timeout adds."""
        assert self.hosts is not None
        words = [
            f"{h.host} {h.role}{'' if h.up else ' (down)'}" for h in self._host_stats()
        ]
        return "; hosts: " + ", ".join(words)

    def connect_trouble(self) -> str:
        """``"; the pool cannot connect: <last error>"`` while connects fail, else ``""``."""
        if self.failing_since is None:
            return ""
        return f"; the pool cannot connect: {_describe(self.last_connect_error)}"

    # ------------------------------------------------------------------
    # check-in

    def checkin(self, entry: Entry, now: float) -> None:
        """A lease came back clean: reuse the entry or retire it.

        An entry that was taken back by ``terminate()`` is ignored.
        """
        state = entry.state
        if state is not IN_USE and state is not RESETTING:
            if state in _GONE:
                return
            raise IllegalTransition(f"{entry!r} was not leased")
        used = now - entry.acquired_at
        self.usage_time_total += used
        self._use_counts[bisect_left(BUCKETS, used)] += 1
        entry.alive_at = now
        max_uses = self._max_uses
        # The test of keeps(), inline: this runs on every release.
        if (
            entry.expires_at <= now
            or entry.generation != self.generation
            or self.closing
            or (max_uses and entry.uses >= max_uses)
            or (
                self.size > self._keep_cap
                and (self.size > self._max_size or not self.waiters)
            )
        ):
            self._retire(entry, now)
            return
        if self.waiters:
            permits = self.permits
            if (
                permits is not None
                and permits.waiting
                and permits.owed_before(self, self._queued_at[0] if self._queued_at else now)
            ):
                # Under a budget, another pool's caller has waited longer than
                # ours: the connection closes and its permit goes there.
                self._retire(entry, now)
                return
            self._give(entry, now, True)
        else:
            entry.state = IDLE
            entry.idle_since = now
            self.idle.append(entry)

    def keeps(self, entry: Entry, now: float) -> bool:
        """Whether a lease coming back now would be reused rather than retired.

        ``checkin`` decides by the same test.  A shell asks before cleaning a
        connection (a rollback, a reset hook): one the pool would close
        anyway is closed at once, without the round trip.
        """
        max_uses = self._max_uses
        return not (
            entry.expires_at <= now
            or entry.generation != self.generation
            or self.closing
            or (max_uses and entry.uses >= max_uses)
            or (self.size > self._keep_cap and (self.size > self._max_size or not self.waiters))
        )

    def begin_reset(self, entry: Entry) -> None:
        """A lease came back and needs a reset round trip first."""
        if entry.state is IN_USE:
            # A move that changes no count, set directly as the hot paths do:
            # _move's checks hash the enum members, a fifth of this release.
            entry.state = RESETTING
        else:
            self._move(entry, RESETTING)
        self.resets += 1

    def discard(self, entry: Entry, now: float, *, lost: bool = True) -> None:
        """Retire an entry whose connection is broken or in an unknown state.

        Works from any state the shell can hold an entry in; ignored for an
        entry already retired.
        """
        if entry.state in _GONE:
            return
        if entry.state is IDLE:
            self.idle.remove(entry)
        if entry.state in _BUSY:
            used = max(0.0, now - entry.acquired_at)
            self.usage_time_total += used
            self._use_counts[bisect_left(BUCKETS, used)] += 1
            if self._on_use is not None:
                self._on_use(used)
        if lost:
            self.connections_lost += 1
        self._retire(entry, now, "broken" if lost else None)

    # ------------------------------------------------------------------
    # connects

    def _grow(self, now: float) -> None:
        """Open connections for ``min_size`` and for waiters, within bounds."""
        if self.closing or not self.opened:
            return
        config = self.config
        want = max(self.fill_target - self.size, len(self.waiters) - self.connecting)
        if want <= 0:
            return
        room = min(config.max_size - self.size, config.max_connecting - self.connecting)
        if (
            room <= 0
            and self.hosts is not None
            and self.idle
            and self.waiters
            and not self.connecting
            and self.size >= config.max_size
        ):
            # Full, and the idle connections are of a role the waiters cannot
            # use (else they would have had them): make room for one that fits.
            self._retire(self.idle.pop(0), now)  # which grows again
            return
        if self.failing_since is not None:
            # One probe at a time while the server is unreachable.
            room = min(room, 1 - self.connecting)
        permits = self.permits
        for _ in range(min(want, room)):
            # Under a budget each connect needs a permit; the connections
            # still lacked for waiters are claimed (see budget.py).
            if permits is not None and not permits.take(
                self, len(self.waiters) - self.connecting, now
            ):
                break
            self.pending.append(self._new_entry())

    def granted(self, now: float) -> None:
        """The budget reserved a permit for this pool: open what it still needs.

        Reservations it no longer needs (its waiters left) are passed on.
        """
        self._grow(now)
        if self.permits is not None:
            self.permits.unreserve(self)

    def yield_idle(self, now: float) -> bool:
        """Close the least recently used idle connection for another pool.

        The budget asks this of a pool when another one needs a connection
        and every permit is taken, even if this pool then falls below
        ``min_size``.  Returns ``False`` when nothing is idle any more.
        """
        if self.closing or not self.idle:
            return False
        entry = self.idle.pop(0)
        self._move(entry, CLOSING)
        self.pending.append(entry)
        return True

    def connect_succeeded(self, entry: Entry, conn: object, now: float) -> None:
        """A connect (and ``configure``) finished; the entry joins the pool."""
        if entry.state is not CONNECTING:
            raise IllegalTransition(f"{entry!r} was not connecting")
        self.failing_since = None
        self.rejection = None
        # The outage is over: a later PoolTimeout must not blame its error.
        self.last_connect_error = None
        self._attempt = 0
        self._reconnect_failed_told = False
        self.connecting -= 1
        self.connections_opened += 1
        entry.conn = conn
        entry.created_at = entry.alive_at = now
        lifetime = self.config.max_lifetime
        if lifetime is not None:
            entry.expires_at = now + lifetime * (1.0 - self.config.lifetime_jitter * self._rand())
        if self.closing or (self.size > self._keep_cap and not self.waiters):
            self._move_from_fresh(entry)
            return
        self._give(entry, now)
        self._grow(now)

    def _move_from_fresh(self, entry: Entry) -> None:
        # connecting was already decremented; go straight to CLOSING.
        entry.state = CLOSING
        self.size -= 1
        self.pending.append(entry)
        self.closed_by["other"] += 1

    def _wanted(self) -> bool:
        """Would the pool still open a connection, counting one in flight?

        While rejected, yes: the one probe goes on, asked for or not.
        """
        return not self.closing and (
            len(self.waiters) >= self.connecting
            or self.size <= self.fill_target
            or self.rejection is not None
        )

    def connect_failed(
        self, entry: Entry, error: BaseException, now: float, *, permanent: bool = False,
        configured: bool = True,
    ) -> float | None:
        """A connect failed.  Returns the delay before retrying, or ``None``.

        On ``None`` the entry is gone (no one needs it any more); otherwise it
        stays ``CONNECTING`` and the shell calls ``retry_due`` after the delay.

        ``permanent``: the server rejected the connect in a way that waiting
        will not mend (see *Rejections*): the queued waiters are refused now,
        and the retry comes after ``backoff_max``.  ``configured=False``: the
        connection was made, and the ``configure`` hook raised ``error`` (see
        *Hook failures*).
        """
        if entry.state is not CONNECTING:
            raise IllegalTransition(f"{entry!r} was not connecting")
        self.connections_failed += 1
        self.last_connect_error = error
        if entry.host is not None:
            assert self.hosts is not None
            self.hosts.failed(entry.host, now)
            entry.host = None
            # A reader waiting for that host, if it was a standby's, may
            # now have the primary.
            self._offer(now)
        if self.failing_since is None:
            self.failing_since = now
        self.rejection = error if permanent else None
        if permanent:
            self._refuse_waiters(self._rejected_message(), error)
        elif self.config.fail_fast_waiters and self._failing_fast(self.failing_since, now):
            self._refuse_waiters(self._fail_fast_message(now), error)
        elif not configured and self.config.configure_fails_waiter:
            self._refuse_oldest(f"the configure hook raised {_describe(error)}", error)
        if not self._wanted() or self.connecting > 1:
            # Another connect is already probing; keep just one.
            self._drop(entry)
            return None
        config = self.config
        if permanent:
            self._attempt = 60  # capped; a later outage goes on from the cap too
        delay = min(config.backoff_max, config.backoff_initial * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 60)
        return delay * (0.5 + 0.5 * self._rand())

    def _refuse_waiters(self, why: str, cause: BaseException) -> None:
        """Fail every queued waiter with ``why`` (each its own error, caused by ``cause``)."""
        refuse = self._refuse
        if refuse is None or not self.waiters:
            return
        waiters = list(self.waiters)
        self.waiters.clear()
        self._queued_at.clear()
        self._wants.clear()
        for waiter in waiters:
            refuse(waiter, self._refusal(why, cause))

    def _refusal(self, why: str, cause: BaseException) -> PoolConnectError:
        """The error one refused waiter raises (each its own: raised in its own task)."""
        error = PoolConnectError(f"{self.name}: {why}")
        error.__cause__ = cause
        return error

    def _refuse_oldest(self, why: str, cause: BaseException) -> None:
        """Fail the waiter that has waited longest (one still waiting) with ``why``."""
        refuse = self._refuse
        if refuse is None:
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            self._queued_at.popleft()
            if self._wants:
                self._wants.pop(waiter, None)
            if refuse(waiter, self._refusal(why, cause)):
                return

    def retry_due(self, entry: Entry, now: float) -> bool:
        """After the backoff delay: ``True`` to try again, ``False`` if not needed."""
        if entry.state is not CONNECTING:
            return False
        if self._wanted():
            return True
        self._drop(entry)
        return False

    def connect_aborted(self, entry: Entry) -> None:
        """The shell gave up on a connect (pool closing, task cancelled)."""
        if entry.state is CONNECTING:
            self._drop(entry)

    def _drop(self, entry: Entry) -> None:
        self._move(entry, CLOSED)
        self.entries.discard(entry)
        if self.permits is not None:
            self.permits.release(self)

    def reconnect_failed_due(self, now: float) -> bool:
        """``True`` once per outage, when it has lasted ``reconnect_timeout``."""
        since = self.failing_since
        if since is None or self._reconnect_failed_told:
            return False
        if now - since >= self.config.reconnect_timeout:
            self._reconnect_failed_told = True
            return True
        return False

    def closed(self, entry: Entry) -> None:
        """The shell finished closing a retired entry."""
        if entry.state is CLOSED:
            return
        self._move(entry, CLOSED)
        self.entries.discard(entry)
        self.connections_closed += 1
        if self.permits is not None:
            self.permits.release(self)

    # ------------------------------------------------------------------
    # housekeeping and administration

    def housekeeping(self, now: float) -> None:
        """The periodic tick: expire, shrink, ping, and refill to ``min_size``."""
        if self.closing or not self.opened:
            return
        config = self.config
        keep: list[Entry] = []
        excess = self.size - config.min_size
        for entry in self.idle:  # least recently used first
            expired = self._expired(entry, now)
            if expired or (
                excess > 0
                and config.max_idle is not None
                and now - entry.idle_since >= config.max_idle
            ):
                self.closed_by[self._why(entry, now) if expired else "idle"] += 1
                self._move(entry, CLOSING)
                self.pending.append(entry)
                excess -= 1
            elif config.keepalive is not None and now - entry.alive_at >= config.keepalive:
                entry.state = PINGING
                self.pending.append(entry)
            else:
                keep.append(entry)
        self.idle[:] = keep
        self._grow(now)

    def observe(
        self, on_wait: Callable[[float], None], on_use: Callable[[float], None]
    ) -> None:
        """Call ``on_wait(seconds)`` for every acquire and ``on_use(seconds)``
        for every lease that ends, from now on (OpenTelemetry's histograms).

        The core's own histograms need no such call.  Pools that nobody
        observes must not pay for one on their hot paths, so the calls there
        are made by wrappers put on this one instance (``checkout`` and
        ``checkin`` found on the instance before the class); the slow paths
        (hand-offs, discards) test for a recorder.  Once only.

        Raises:
            RuntimeError: an observer is already set.
        """
        if self._on_wait is not None:
            raise RuntimeError(f"{self.name} is already observed")
        self._on_wait, self._on_use = on_wait, on_use
        checkout, checkin = self.checkout, self.checkin

        def observed_checkout(now: float) -> Entry | None:
            entry = checkout(now)
            if entry is not None and entry.state is IN_USE:
                on_wait(0.0)  # served at once
            return entry

        def observed_checkin(entry: Entry, now: float) -> None:
            if entry.state is IN_USE or entry.state is RESETTING:
                on_use(now - entry.acquired_at)
            checkin(entry, now)

        self.checkout = observed_checkout  # type: ignore[method-assign]
        self.checkin = observed_checkin  # type: ignore[method-assign]

    def overdue(self, now: float) -> list[Entry]:
        """Leases held longer than ``leak_timeout``, each reported once.

        Called from housekeeping when leak detection is on; the entries
        returned are counted in ``leaks`` and stay leased (the shell only
        tells someone).  A connection leased again later is a new lease and
        may be reported again.
        """
        limit = self.config.leak_timeout
        told = self._leaks_told
        if limit is None:
            return []
        found = []
        for entry in self.entries:
            if (
                entry.state is IN_USE
                and now - entry.acquired_at >= limit
                and told.get(entry) != entry.acquired_at
            ):
                told[entry] = entry.acquired_at
                found.append(entry)
        if told:
            # Forget leases that are over, so the dict stays as small as the pool.
            for entry in [e for e, at in told.items() if e.state is not IN_USE
                          or e.acquired_at != at]:
                del told[entry]
        self.leaks += len(found)
        return found

    def ping_done(
        self, entry: Entry, ok: bool, now: float, *, standby: bool | None = None
    ) -> None:
        """Report a housekeeping (or ``check_idle``) ping.

        ``standby``: the role the connection reported after the ping, when
        the pool has several hosts (``None``: not known).
        """
        if entry.state is not PINGING:
            if entry.state in _GONE:
                return
            raise IllegalTransition(f"{entry!r} was not being pinged")
        if ok and standby is not None and entry.host is not None:
            self.role_seen(entry, standby, now)
        if not ok:
            self.checks_failed += 1
            self.connections_lost += 1
            self._retire(entry, now, "check_failed")
        elif self.closing or self._expired(entry, now):
            self._retire(entry, now)
        else:
            entry.alive_at = now
            if self.waiters:
                self._give(entry, now)
            else:
                # Back to idle where it was: a ping is not a use, so it must
                # neither reset the idle clock that max_idle shrinks by nor
                # move the entry to the hot end of the stack.
                entry.state = IDLE
                idle = self.idle
                at = len(idle)
                while at and idle[at - 1].idle_since > entry.idle_since:
                    at -= 1
                idle.insert(at, entry)

    def check_idle(self, now: float) -> list[Entry]:
        """Move every idle entry to ``PINGING`` and return them (``pool.check()``)."""
        taken, self.idle = self.idle, []
        for entry in taken:
            entry.state = PINGING
        return taken

    def expire(self, now: float) -> None:
        """Start a new generation: every connection is replaced as it comes back."""
        self.generation += 1
        idle, self.idle = self.idle, []
        for entry in idle:
            self._move(entry, CLOSING)
            self.pending.append(entry)
        self.closed_by["expired"] += len(idle)
        self._grow(now)

    def resize(self, min_size: int, max_size: int, now: float) -> None:
        """Change the bounds; extra idle connections go now, leased ones on return."""
        self._apply_config(replace(self.config, min_size=min_size, max_size=max_size))
        while self.size > max_size and self.idle:
            self._retire(self.idle.pop(0), now, "other")
        self._grow(now)

    # ------------------------------------------------------------------
    # several hosts (only with ``hosts``; see the module doc)

    def _serves(self, entry: Entry, want: str | None, now: float) -> bool:
        """Whether ``entry`` may go to a caller that asked for ``want``."""
        if want is None:
            return True  # every entry kept fits the pool's target
        role = entry.host.role if entry.host is not None else None
        if want == READ_WRITE:
            return role == PRIMARY
        # READ_ONLY: a standby; the primary only while no standby can be had.
        assert self.hosts is not None
        return role == STANDBY or (role == PRIMARY and not self.hosts.standby_hoped(now))

    def checkout_for(self, want: str, now: float) -> Entry | None:
        """``checkout`` for a caller that asked for ``want`` (``READ_WRITE``, ``READ_ONLY``).

        Takes the first idle entry in ``idle_order`` that serves ``want``,
        passing over the others (and the queued waiters, who cannot use what
        it takes: an entry that fits a waiter is never left idle).

        Raises:
            ValueError: the pool never connects to a server that serves
                ``want`` (a read-write caller on a standby-only pool).
        """
        hosts = self.hosts
        if hosts is None or want not in (READ_WRITE, READ_ONLY):
            raise ValueError(f"want must be {READ_WRITE!r} or {READ_ONLY!r} on a multi-host pool")
        if not hosts.accepts(want):
            raise ValueError(
                f"{self.name} connects only to {' or '.join(hosts.roles)} servers "
                f"(target_session_attrs={hosts.target!r}): none is {want}"
            )
        idle = self.idle
        for at in range(len(idle) - 1, -1, -1) if self._take_at else range(len(idle)):
            entry = idle[at]
            if self._expired(entry, now) or not self._serves(entry, want, now):
                continue
            del idle[at]
            window = self._check_window
            if window is not None and now - entry.alive_at > window:
                entry.state = CHECKING
                entry.acquired_at = now
            else:
                self._lease(entry, now)
            return entry
        # Nothing fits: the expired go now, so that the queue can grow.
        for entry in [e for e in idle if self._expired(e, now)]:
            idle.remove(entry)
            self._retire(entry, now)
        return None

    def enqueue_for(self, waiter: W, want: str, now: float) -> None:
        """``enqueue`` for a caller that asked for ``want``; it is served only so."""
        self._wants[waiter] = want
        try:
            self.enqueue(waiter, now)
        except BaseException:
            self._wants.pop(waiter, None)
            raise

    def _give_routed(self, entry: Entry, now: float) -> None:
        """``_give`` with roles: to the oldest live waiter ``entry`` serves, else idle."""
        waiters = self.waiters
        queued_at = self._queued_at
        wants = self._wants
        at = 0
        while at < len(waiters):
            waiter = waiters[at]
            if not self._serves(entry, wants.get(waiter), now):
                at += 1
                continue
            since = queued_at[at]
            del waiters[at]
            del queued_at[at]
            wants.pop(waiter, None)
            entry.state = IN_USE
            entry.uses += 1
            entry.acquired_at = now
            if self._wake(waiter, entry):
                self.acquires += 1
                self.wait_time_total += now - since
                return
            entry.uses -= 1
        entry.state = IDLE
        entry.idle_since = now
        self.idle.append(entry)

    def _route(self, now: float) -> None:
        """Hand idle entries to the queued waiters they serve, then grow for the rest."""
        self._offer(now)
        self._grow(now)

    def _offer(self, now: float) -> None:
        """Hand idle entries to the queued waiters they serve."""
        waiters = self.waiters
        wants = self._wants
        idle = list(self.idle)
        for entry in reversed(idle) if self._take_at else idle:  # in idle_order
            if not waiters:
                break
            if self._expired(entry, now):
                continue
            if any(self._serves(entry, wants.get(w), now) for w in waiters):
                self.idle.remove(entry)
                self._give_routed(entry, now)

    def _need(self, entry: Entry) -> str | None:
        """What the connect of ``entry`` is for: the oldest waiter not yet
        covered by another connect aimed at a host, else the pool's target."""
        waiters = self.waiters
        if not waiters:
            return None
        ahead = sum(
            1 for e in self.entries
            if e.state is CONNECTING and e.host is not None and e is not entry
        )
        waiter = waiters[min(ahead, len(waiters) - 1)]
        return self._wants.get(waiter)

    def aim(self, entry: Entry, now: float) -> float:
        """Choose the host a connecting ``entry`` goes to, before each attempt.

        Returns ``0.0`` with ``entry.host`` set: connect to it now.  Else no
        host may be tried yet (all down, or only standbys that are not due
        for a recheck when a primary is wanted): the seconds to wait, after
        which the shell asks ``retry_due`` and then ``aim`` again.
        """
        hosts = self.hosts
        assert hosts is not None
        want = self._need(entry)
        host = hosts.pick(now, want)
        entry.host = host
        if host is None:
            return hosts.wait(now, want)
        return 0.0

    def connect_landed(self, entry: Entry, conn: object, standby: bool, now: float) -> bool:
        """A connect to ``entry.host`` succeeded and the server is a ``standby`` or not.

        Returns ``True`` when the entry joins the pool (as ``connect_succeeded``);
        ``False`` when the server's role is one the pool does not connect
        to: the shell closes ``conn``, the entry stays ``CONNECTING`` and the
        shell goes on with ``aim``.  A role that changed is noted (see
        ``role_seen``).
        """
        hosts = self.hosts
        host = entry.host
        assert hosts is not None and host is not None
        if entry.state is not CONNECTING:
            raise IllegalTransition(f"{entry!r} was not connecting")
        if hosts.landed(host, standby, now):
            self._role_changed(host, now)
        if not hosts.fits(host.role):
            entry.host = None
            return False
        self.connect_succeeded(entry, conn, now)
        return True

    def role_seen(self, entry: Entry, standby: bool, now: float) -> None:
        """A connection reports its server's role (after a ping, say).

        On a change (a promotion, a demotion) every connection to that host
        has the new role: those that no longer fit the pool are retired
        (idle ones now, leased ones when they come back), and waiters that
        the host now serves get its idle connections.
        """
        host = entry.host
        if self.hosts is not None and host is not None and self.hosts.observed(
            host, standby, now
        ):
            self._role_changed(host, now)

    def _role_changed(self, host: Host, now: float) -> None:
        assert self.hosts is not None
        if not self.hosts.fits(host.role):
            for entry in list(self.entries):
                if entry.host is not host or entry.state in _GONE or entry.state is CONNECTING:
                    continue
                if entry.state is IDLE:
                    self.idle.remove(entry)
                    self._retire(entry, now)
                else:
                    entry.expires_at = -_INF  # retired when it comes back
        self._route(now)

    def _host_stats(self) -> tuple[HostStats, ...]:
        assert self.hosts is not None
        counts = {h: [0, 0, 0] for h in self.hosts.hosts}  # size, idle, in use
        for entry in self.entries:
            c = counts.get(entry.host)
            if c is None or entry.state in _GONE:
                continue
            c[0] += 1
            if entry.state is IDLE:
                c[1] += 1
            elif entry.state in _BUSY:
                c[2] += 1
        return tuple(
            HostStats(
                host=h.name,
                role=h.role or "unknown",
                up=h.failures == 0,
                size=counts[h][0],
                idle=counts[h][1],
                in_use=counts[h][2],
                connects=h.connects,
                connects_failed=h.connects_failed,
                role_changes=h.role_changes,
            )
            for h in self.hosts.hosts
        )

    # ------------------------------------------------------------------

    def stats(self) -> PoolStats:
        """A frozen snapshot of sizes and counters."""
        in_use = connecting = 0
        for entry in self.entries:
            state = entry.state
            if state in _BUSY:
                in_use += 1
            elif state is CONNECTING:
                connecting += 1
        return PoolStats(
            min_size=self.config.min_size,
            max_size=self.config.max_size,
            size=self.size,
            idle=len(self.idle),
            in_use=in_use,
            waiting=len(self.waiters) + self._woken,
            connecting=connecting,
            acquires=self.acquires,
            waited_acquires=self.waited_acquires,
            timeouts=self.timeouts,
            too_many_waiters=self.too_many_waiters,
            connections_opened=self.connections_opened,
            connections_closed=self.connections_closed,
            connections_lost=self.connections_lost,
            connections_failed=self.connections_failed,
            resets=self.resets,
            checks_failed=self.checks_failed,
            wait_time_total=self.wait_time_total,
            usage_time_total=self.usage_time_total,
            # LISTEN/NOTIFY (issue 15)
            dedicated=self.dedicated,
            leaks=self.leaks,
            **{f"closed_{cause}": n for cause, n in self.closed_by.items()},
            wait_histogram=self._wait_histogram(),
            usage_histogram=Histogram(tuple(self._use_counts), self.usage_time_total),
            hosts=() if self.hosts is None else self._host_stats(),
        )

    def _wait_histogram(self) -> Histogram:
        counts = list(self._wait_counts)
        # Acquires served without queueing waited 0: the first bucket.
        counts[0] += max(0, self.acquires - sum(counts))
        return Histogram(tuple(counts), self.wait_time_total)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = str(error).strip().splitlines()
    return redact(f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": "))
