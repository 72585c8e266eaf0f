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
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Generic, TypeVar

from .._redact import redact
from ..errors import IllegalTransition, PoolClosed, PoolConnectError, TooManyWaiters
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
from .stats import PoolStats

__all__ = ["PoolCore"]

W = TypeVar("W")

_BUSY = frozenset({CHECKING, IN_USE, RESETTING})
_GONE = frozenset({CLOSING, CLOSED})


class PoolCore(Generic[W]):
    """Sizing, waiters, lifetimes, backoff and housekeeping for one pool.

    Args:
        config: The pool's settings.
        wake: ``wake(waiter, entry) -> bool`` hands ``entry`` (already leased)
            to ``waiter``, or with ``entry=None`` asks it to come and take an
            idle one (barging; see ``checkout_nudged``); it returns ``False``
            if that waiter is gone.  It must not change the core's state.
        refuse: ``refuse(waiter, error)`` fails a queued waiter with ``error``
            (a ``PoolConnectError``) when the server rejects the pool's
            connects; the waiter is already out of the queue.  It must not
            change the core's state.  Without it, such waiters wait out their
            own timeout.
        rand: Source of jitter in ``[0, 1)``; tests pass a fixed one.

    Attributes (read by shells, written only here):
        idle: Idle entries, least recently used first.
        waiters: Queued waiters, oldest first.
        pending: Entries whose state asks the shell for IO (see module doc).
        size: Entries that are neither closing nor closed.
        connecting: Entries whose connect is under way (or backing off).
        closing: ``close()`` was called; nothing more is handed out.
        name: How errors name the pool.
    """

    def __init__(
        self,
        config: PoolConfig,
        wake: Callable[[W, Entry | None], bool],
        *,
        refuse: Callable[[W, PoolConnectError], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
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

    def _apply_config(self, config: PoolConfig) -> None:
        # Hot-path settings are copied to plain attributes: one lookup each.
        self.config = config
        self._check_window = config.check_window
        self._max_uses = config.max_uses
        self._max_size = config.max_size
        self._max_waiting = config.max_waiting
        self._barge_window = config.barge_window
        # Connections beyond this many are not kept idle: ``max_size``, or
        # ``min_size`` when ``max_idle`` is 0 (none above it may sit idle).
        self._keep_cap = config.min_size if config.max_idle == 0 else config.max_size

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

    def _retire(self, entry: Entry, now: float) -> None:
        """Send ``entry`` to be closed (caller took it off the idle stack)."""
        self._move(entry, CLOSING)
        self.pending.append(entry)
        self._grow(now)

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
                self.wait_time_total += now - since
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
        waiters = list(self.waiters)
        self.waiters.clear()
        self._queued_at.clear()
        idle, self.idle = self.idle, []
        for entry in idle:
            self._move(entry, CLOSING)
            self.pending.append(entry)
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
            # The common case inline: the hot end is fresh and needs no check.
            entry = idle[-1]
            window = self._check_window
            if (
                entry.expires_at > now
                and entry.generation == self.generation
                and (window is None or now - entry.alive_at <= window)
            ):
                idle.pop()
                entry.state = IN_USE
                entry.uses += 1
                entry.acquired_at = now
                self.acquires += 1
                return entry
        return self._take_idle(now)

    def _take_idle(self, now: float) -> Entry | None:
        idle = self.idle
        while idle:
            entry = idle.pop()
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
            return True
        self.checks_failed += 1
        self.connections_lost += 1
        self._retire(entry, now)
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
                f"{len(self.waiters) + self._woken} callers already wait for a connection "
                f"(max_waiting={limit})"
            )
        if self.failing_since is not None:
            why = self.connect_refusal(now)
            if why is not None:
                raise PoolConnectError(why) from self.last_connect_error
        self.waiters.append(waiter)
        self._queued_at.append(now)
        self.waited_acquires += 1
        if self.size < self._max_size:
            self._grow(now)

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
        self.wait_time_total += now - since
        self._nudge()  # if more sit idle, pass the nudge on
        return entry

    def timeout_message(self, waited: float) -> str:
        """Words for a ``PoolTimeout``: how long, and why nothing came."""
        msg = f"no connection available after waiting {waited:.3g}s"
        if self.failing_since is not None:
            return msg + self.connect_trouble()
        # Connects in flight count in size: a slow server is not a busy pool.
        n = self.connecting
        if not n:
            what = "all in use"
        else:
            what = f"{n} connect{'s' if n > 1 else ''} under way"
            if n < self.size:
                what += ", the rest in use"
        return msg + f" (size={self.size}, max_size={self.config.max_size}, {what})"

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
        self.usage_time_total += now - entry.acquired_at
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
            self.usage_time_total += max(0.0, now - entry.acquired_at)
        if lost:
            self.connections_lost += 1
        self._retire(entry, now)

    # ------------------------------------------------------------------
    # connects

    def _grow(self, now: float) -> None:
        """Open connections for ``min_size`` and for waiters, within bounds."""
        if self.closing or not self.opened:
            return
        config = self.config
        want = max(config.min_size - self.size, len(self.waiters) - self.connecting)
        if want <= 0:
            return
        room = min(config.max_size - self.size, config.max_connecting - self.connecting)
        if self.failing_since is not None:
            # One probe at a time while the server is unreachable.
            room = min(room, 1 - self.connecting)
        for _ in range(min(want, room)):
            self.pending.append(self._new_entry())

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

    def _wanted(self) -> bool:
        """Would the pool still open a connection, counting one in flight?

        While rejected, yes: the one probe goes on, asked for or not.
        """
        return not self.closing and (
            len(self.waiters) >= self.connecting
            or self.size <= self.config.min_size
            or self.rejection is not None
        )

    def connect_failed(
        self, entry: Entry, error: BaseException, now: float, *, permanent: bool = False
    ) -> float | None:
        """A connect failed.  Returns the delay before retrying, or ``None``.

        On ``None`` the entry is gone (no one needs it any more); otherwise it
        stays ``CONNECTING`` and the shell calls ``retry_due`` after the delay.

        ``permanent``: the server rejected the connect in a way that waiting
        will not mend (see *Rejections*): the queued waiters are refused now,
        and the retry comes after ``backoff_max``.
        """
        if entry.state is not CONNECTING:
            raise IllegalTransition(f"{entry!r} was not connecting")
        self.connections_failed += 1
        self.last_connect_error = error
        if self.failing_since is None:
            self.failing_since = now
        self.rejection = error if permanent else None
        if permanent:
            self._refuse_waiters(self._rejected_message(), error)
        elif self.config.fail_fast_waiters and self._failing_fast(self.failing_since, now):
            self._refuse_waiters(self._fail_fast_message(now), error)
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
        for waiter in waiters:
            error = PoolConnectError(why)
            error.__cause__ = cause
            refuse(waiter, error)

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
            if self._expired(entry, now) or (
                excess > 0
                and config.max_idle is not None
                and now - entry.idle_since >= config.max_idle
            ):
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

    def ping_done(self, entry: Entry, ok: bool, now: float) -> None:
        """Report a housekeeping (or ``check_idle``) ping."""
        if entry.state is not PINGING:
            if entry.state in _GONE:
                return
            raise IllegalTransition(f"{entry!r} was not being pinged")
        if not ok:
            self.checks_failed += 1
            self.connections_lost += 1
            self._retire(entry, now)
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
        self._grow(now)

    def resize(self, min_size: int, max_size: int, now: float) -> None:
        """Change the bounds; extra idle connections go now, leased ones on return."""
        self._apply_config(replace(self.config, min_size=min_size, max_size=max_size))
        while self.size > max_size and self.idle:
            self._retire(self.idle.pop(0), now)
        self._grow(now)

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
        )


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = str(error).strip().splitlines()
    return redact(f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": "))
