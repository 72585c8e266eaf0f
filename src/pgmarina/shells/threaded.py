"""Pool: the thread shell around :class:`~pgmarina._core.PoolCore`.

Every call into the core happens under one ``threading.Lock`` and is short:
the core only decides.  IO never runs under the lock.  What the core leaves
in ``pending`` is taken under the lock and carried out after it is released,
either inline (closing a connection the driver already knows is dead) or by
a few daemon worker threads (connects, graceful closes, pings).  One more
daemon thread runs housekeeping.  Both exit when the pool closes; there is
never a thread per connection.

A waiting caller parks on a private lock of its own; ``wake`` (called by the
core under the pool lock) stores the entry on the waiter and releases that
lock.  A waiter that times out, or is interrupted, re-takes the pool lock
and either finds that it was served after all (and keeps or returns the
connection) or removes itself from the queue: the hand-off is decided under
one lock, so a connection is never lost between the two.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Any

from .._core import Entry, PoolStats
from .._core.entry import CHECKING, CLOSED, CLOSING, CONNECTING, IN_USE, PINGING
from .._lease import FULL_RESET, RELEASED, set_con
from .._lease import end as end_lease
from ..adapters import BROKEN, BUSY, CLEAN, IN_TRANSACTION
from ..errors import PoolClosed, PoolConnectError, PoolNotOpen, PoolTimeout
from ..listener import Gap, Listener, Notification, Notifications, Subscription
from ._common import (
    CUSTOM,
    DEFAULT,
    ENTERING,
    FULL,
    NO_RESET,
    ConfigureFailed,
    ConnectionContextBase,
    PoolBase,
    logger,
    with_defaults,
)

__all__ = ["Pool"]

_INF = float("inf")

#: The thread :class:`Pool`'s default ``barge_window``, in seconds.
#:
#: Once threads outnumber connections, strict FIFO (``0``: the core's default,
#: and :class:`~pgmarina.AsyncPool`'s only mode) wakes a parked thread for
#: every connection handed over, while the thread that gave it back parks in
#: turn: two thread switches a cycle, which even a bare lock-and-deque FIFO
#: pays.  A thread that may take its connection straight back wakes nobody.
#: A waiter can be passed only during its first ``barge_window`` seconds in
#: the queue; after that, hand-off is strict FIFO until it is served, so
#: every thread is served and no acquire is held back by more than the
#: window.  Measured (50 threads on 10 connections, ``SELECT 1``, 7 rounds):
#: psycopg 1.44x and psycopg2 1.80x the cycles of strict FIFO, mean acquire
#: wait 2.5 ms instead of 3.8 ms (psycopg), 99th percentile 21 ms instead of
#: 7 ms, fewest / most cycles of one thread 0.51 and 0.44 (strict FIFO: 0.96).
#: A window of 0.05 s bought 15-20 % more at the price of an evenness of
#: 0.26, and 0.14 at 100 threads: too near starving someone for a default.
BARGE_WINDOW = 0.02

#: Worker threads a pool runs at most besides the spare one, however large
#: ``max_connecting`` is: connects beyond them queue for a free thread.
_MAX_CONNECT_THREADS = 8


class _Waiter:
    """A parked caller: ``gate`` is held until the core hands it an entry."""

    __slots__ = ("entry", "error", "gate", "nudged", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.gate = threading.Lock()
        self.gate.acquire()
        self.entry: Entry | None = None
        self.error: BaseException | None = None
        self.nudged = False  # woken to take an idle entry (barging)


class _CheckRace:
    """A health check run for a caller whose deadline may come first."""

    __slots__ = ("done", "left", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok: bool | None = None  # the check's verdict, if the caller still waits
        self.left = False  # the caller gave up; the check's thread finishes the job


class _Workers:
    """A few daemon threads that run the pool's background IO.

    ``stop`` waits for the jobs under way, but not for *detached* ones
    (connects): a connect can block for all of ``connect_timeout``, and it
    needs no one to wait for it, because it drops what it opened once it
    sees the pool closed.
    """

    def __init__(self, name: str, count: int) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[..., Any], tuple[Any, ...], bool] | None
        ] = queue.SimpleQueue()
        self._detached: set[threading.Thread] = set()  # busy with a detached job
        self._threads = [
            threading.Thread(target=self._run, name=f"{name} worker {i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, detached: bool = False) -> None:
        self._jobs.put((fn, args, detached))

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, detached = job
            if detached:
                self._detached.add(me)
            try:
                fn(*args)
            except BaseException:  # pragma: no cover - jobs handle their own errors
                # Whatever escapes, the thread stays: the pool has no other.
                logger.exception("pgmarina background job failed")
            finally:
                self._detached.discard(me)
            # A job is a bound method of the pool: holding it while blocked on
            # the queue would keep a forgotten pool (and its threads) alive.
            del job, fn, args

    def stop(self, timeout: float | None) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        deadline = None if timeout is None or timeout == _INF else monotonic() + timeout
        for thread in self._threads:
            if thread is threading.current_thread() or thread in self._detached:
                continue
            thread.join(None if deadline is None else max(0.0, deadline - monotonic()))


class _Watchdog:
    """One lazily started daemon thread that interrupts overrunning IO.

    ``arm`` registers a deadline and an action; ``disarm`` removes it and says
    whether the action already ran, so that a call which finished a hair too
    late is treated as failed rather than trusted on a cut-off connection.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int]] = []
        self._actions: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, seconds: float, action: Callable[..., Any], *args: Any) -> int:
        token = next(self._ids)
        if seconds == _INF:
            return token  # never due: nothing to watch, and disarm finds it unfired
        with self._cond:
            self._actions[token] = (action, args)
            heapq.heappush(self._heap, (monotonic() + seconds, token))
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run, name=f"{self._name} watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return token

    def disarm(self, token: int) -> bool:
        with self._cond:
            self._actions.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        cond = self._cond
        with cond:
            while not self._stopped:
                heap = self._heap
                while heap and heap[0][1] not in self._actions:
                    heapq.heappop(heap)  # disarmed in time
                if not heap:
                    cond.wait()
                    continue
                delay = heap[0][0] - monotonic()
                if delay > 0:
                    cond.wait(delay)
                    continue
                _, token = heapq.heappop(heap)
                action, args = self._actions.pop(token)
                self._fired.add(token)
                try:
                    action(*args)
                except Exception:  # pragma: no cover - best effort
                    logger.debug("%s: watchdog action failed", self._name, exc_info=True)


class Pool(PoolBase):
    """A thread-safe connection pool for psycopg 3 or psycopg2.

    Same arguments and behaviour as :class:`~pgmarina.AsyncPool`, without
    ``await``; ``driver`` is ``"psycopg"`` (the default, ``None``),
    ``"psycopg2"`` or an adapter object, and hooks (``configure``, ``check``, ``reset``,
    ``reconnect_failed``, ``on_leak``) are plain callables; ``on_leak`` runs
    on the housekeeping thread.  ``reconnect_failed`` runs on
    a daemon thread of its own; a ``configure`` still running when
    ``connect_timeout`` is up has its connection cut off under it.

    One more argument, ``barge_window`` (seconds; default ``0.02``, see
    :data:`BARGE_WINDOW`; ``0`` is strict FIFO, as in ``AsyncPool``), lets
    a thread take a returned connection ahead of the queue until the oldest
    waiter has waited that long; past it, hand-off is strict FIFO, so every
    thread is served.  With more threads than connections this saves thread
    switches on every cycle (1.3x to 1.8x the cycles of strict FIFO measured,
    50 threads on 10 connections) at the price of less even waits; see
    :class:`~pgmarina._core.PoolConfig`.  A pool over several hosts hands
    off by role and so never barges.

    Durations follow the same rule as in :class:`~pgmarina.AsyncPool`, so
    no value that is accepted can overflow a thread wait: a timeout of 30
    days or more (``inf`` too) is no timeout.  Connects run on at
    most 8 worker threads (plus a spare) however large ``max_connecting``
    is; more connects queue for them.
    """

    _sync = True
    _default_driver = "psycopg"
    _listener: Listener | None = None  # LISTEN/NOTIFY, made on first use

    __slots__ = ("_changed", "_lock", "_stopping", "_workers")  # (see PoolBase)

    # The constructor, with the thread pool's own default barge window.
    __init__ = with_defaults(PoolBase.__init__, barge_window=BARGE_WINDOW)

    def _init_shell(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # filled / drained
        self._stopping = threading.Event()
        self._workers: _Workers | None = None
        self._watchdog = _Watchdog(self.name)
        self._housekeeper: threading.Thread | None = None

    # ------------------------------------------------------------------
    # lifecycle

    def open(self, wait: bool = False, timeout: float | None = DEFAULT) -> None:
        """Start the pool; see :meth:`AsyncPool.open`."""
        self._check_timeout(timeout)  # before starting anything
        with self._lock:
            if self._closed:
                raise PoolClosed(f"{self.name} is closed and cannot be reopened")
            starting = not self._opened
            if starting:
                self._opened = True
                self._core.open(monotonic())
                work = self._take_work()
        if starting:
            # One thread more than connects may run, so a close or a ping
            # does not queue behind them; a max_connecting above the cap
            # makes connects (and the rest) queue for threads instead.
            threads = min(self._config.max_connecting, _MAX_CONNECT_THREADS) + 1
            self._workers = _Workers(self.name, threads)
            # A pool dropped without close() must not leave its threads and
            # server connections behind once it is collected.
            weakref.finalize(
                self, _forgotten, self.name, self._core.entries, self._adapter,
                self._workers, self._watchdog, self._stopping, os.getpid(),
            )
            self._housekeeper = threading.Thread(
                target=_housekeeping,
                args=(weakref.ref(self), self._stopping, self._config.housekeeping_interval),
                name=f"{self.name} housekeeping",
                daemon=True,
            )
            self._housekeeper.start()
            self._run(work)
        if wait:
            try:
                self.wait(timeout)
            except BaseException:
                self.close(timeout=0)
                raise

    def wait(self, timeout: float | None = DEFAULT) -> None:
        """Wait until ``min_size`` connections are open; see :meth:`AsyncPool.wait`."""
        seconds = self._check_timeout(timeout)
        start = monotonic()
        core = self._core
        with self._lock:
            if not self._opened:
                raise PoolNotOpen(f"{self.name} is not open")
            while core.size - core.connecting < core.fill_target:
                if self._closed:
                    raise PoolClosed(f"{self.name} is closed")
                problem = self._fill_problem(start, seconds, monotonic())
                if problem is not None:
                    raise problem
                self._changed.wait(0.05)

    def __enter__(self) -> Pool:
        self.open(wait=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float | None = 10.0, *, wait: bool = True) -> None:
        """Close gracefully; see :meth:`AsyncPool.close`."""
        seconds = self._check_close_timeout(timeout)
        deadline = None if seconds is None else monotonic() + seconds
        core = self._core
        with self._lock:
            self._shut("closed while waiting")
            work = self._take_work()
        self._run(work)  # idle connections close now, on the workers
        with self._lock:
            if not wait:
                taken = []  # leased ones close as they come back
            elif not self._changed.wait_for(lambda: core.drained, seconds):
                self._log.warning(
                    "%s: leases still out after %.3gs; terminating them", self.name, seconds
                )
                taken = core.terminate(monotonic())
                self._changed.notify_all()  # a concurrent close() waits no longer
            else:
                taken = []
            # Connects in flight end on their own (a connect that succeeds
            # now is dropped); wait for them, within the same timeout.
            self._changed.wait_for(
                lambda: not core.connecting,
                None if deadline is None else max(0.0, deadline - monotonic()),
            )
        self._stop_background(taken, self._reset_timeout + 1.0)
        if self._listener is not None:
            self._listener.close(self._reset_timeout + 1.0)
        if self._housekeeper is not None and self._housekeeper is not threading.current_thread():
            self._housekeeper.join(self._config.housekeeping_interval + 1.0)

    def terminate(self) -> None:
        """Close at once: fail waiters, drop every connection, leased ones too."""
        core = self._core
        with self._lock:
            self._shut("terminated")
            taken = core.terminate(monotonic()) + self._take_work()
            self._changed.notify_all()
        self._stop_background(taken, 0)
        if self._listener is not None:
            self._listener.terminate()

    def _shut(self, why: str) -> None:
        """Stop serving and fail queued waiters (caller holds the lock)."""
        if self._closed:
            return
        self._closed = True
        for waiter in self._core.close(monotonic()):
            waiter.error = PoolClosed(f"{self.name} {why}")
            waiter.gate.release()

    def _stop_background(self, taken: list[Entry], workers_timeout: float) -> None:
        """Drop the connections taken back, then stop the pool's threads."""
        self._stopping.set()
        for entry in taken:
            if entry.state is not CONNECTING:
                self._hard_close(entry)
        self._watchdog.stop()
        if self._workers is not None:
            self._workers.stop(workers_timeout)

    def _hard_close(self, entry: Entry) -> None:
        self._terminate_quietly(entry.conn)
        with self._lock:
            self._core.closed(entry)

    # ------------------------------------------------------------------
    # acquire / release

    def acquire(self, *, timeout: float | None = DEFAULT) -> Any:
        """Lease a connection; give it back with :meth:`release`.

        Raises:
            PoolTimeout: No connection came within the timeout.
            TooManyWaiters: ``max_waiting`` callers were already queued.
            PoolConnectError: The pool is failing fast, or the server rejects its connects.
            PoolClosed: The pool is closing or closed.
            PoolNotOpen: The pool was not opened.
        """
        if timeout is not DEFAULT:
            self._check_timeout(timeout)
        entry, waiter = self._checkout_or_enqueue()
        if waiter is None and entry is not None and entry.state is IN_USE:
            conn = entry.conn
            if not self._is_closed(conn):
                return self._new_lease(conn, entry, self)
        return self._acquire_rest(entry, waiter, timeout)

    def _acquire_for(self, want: str, timeout: Any) -> Any:
        """An acquire for a caller that asked for a role (``pool.writer.acquire()``)."""
        if timeout is not DEFAULT:
            self._check_timeout(timeout)
        entry, waiter = self._checkout_or_enqueue(None, want)
        if waiter is None and entry is not None and entry.state is IN_USE:
            conn = entry.conn
            if not self._is_closed(conn):
                return self._new_lease(conn, entry, self)
        return self._acquire_rest(entry, waiter, timeout, want)

    def _routed_connection(self, want: str, timeout: Any) -> _RoutedConnection:
        """``pool.writer.connection()`` / ``pool.reader.connection()``."""
        ctx = _RoutedConnection.made_for(self, timeout)
        ctx._want = want
        return ctx

    def _acquire_rest(
        self, entry: Entry | None, waiter: _Waiter | None, timeout: Any, want: str | None = None
    ) -> Any:
        """The rest of an acquire, given what ``_checkout_or_enqueue`` gave."""
        seconds = self._config.timeout if timeout is DEFAULT else self._check_timeout(timeout)
        if waiter is None:
            start = monotonic()
        else:
            start = waiter.start
            entry = self._park(waiter, None if seconds is None else start + seconds)
            # The common end of a wait: handed a connection ready to use.
            if entry.state is IN_USE:
                conn = entry.conn
                if not self._is_closed(conn):
                    return self._new_lease(conn, entry, self)
        return self._acquire_slow(entry, start, seconds, want)

    getconn = acquire

    def _checkout_or_enqueue(
        self, start: float | None = None, want: str | None = None
    ) -> tuple[Entry | None, _Waiter | None]:
        """Under one lock: an idle entry, or else a place in the queue.

        ``start``: when the acquire began, if it began earlier (its waits are
        measured from there).  ``want``: the role a routed caller asked for.
        """
        core = self._core
        waiter = None
        refused: Exception | None = None
        with self._lock:
            now = monotonic()
            entry = core.checkout(now) if want is None else core.checkout_for(want, now)
            if entry is None:
                if not self._opened:
                    raise PoolNotOpen(f"{self.name} is not open; call open() or use 'with'")
                waiter = _Waiter(now if start is None else start)
                try:
                    if want is None:
                        core.enqueue(waiter, now)
                    else:
                        core.enqueue_for(waiter, want, now)
                except Exception as exc:  # refused; checkout may still have left work
                    refused, waiter = exc, None
            if not core.pending and refused is None:
                return entry, waiter
            work = self._take_work()
        self._run(work)
        if refused is not None:
            raise refused
        return entry, waiter

    def _acquire_slow(
        self, entry: Entry | None, start: float, seconds: float | None, want: str | None = None
    ) -> Any:
        """The rest of ``acquire``: the entry got (ready, dead or unchecked), then retries."""
        core = self._core
        deadline = None if seconds is None else start + seconds
        while True:
            if entry is None:
                entry, waiter = self._checkout_or_enqueue(start, want)
                if waiter is not None:
                    entry = self._park(waiter, deadline)
                assert entry is not None
            if self._is_closed(entry.conn):
                self._discard(entry, lost=True)
                entry = None
            elif entry.state is CHECKING:
                if deadline is not None and deadline - monotonic() < self._reset_timeout:
                    ok = self._check_racing(entry, start, deadline)
                else:
                    ok = self._check_on_checkout(entry)
                with self._lock:
                    kept = core.check_done(entry, ok, monotonic())
                    work = self._take_work()
                self._run(work)
                if not kept:
                    entry = None
            if entry is not None:
                return self._new_lease(entry.conn, entry, self)

    def _park(self, waiter: _Waiter, deadline: float | None) -> Entry:
        """Wait until the core hands ``waiter`` an entry (or time runs out).

        While barging, a wake may carry no entry but a nudge ("come and take
        an idle one"); if another caller took it first, the waiter is back at
        the head of the queue and parks again.
        """
        gate = waiter.gate
        while True:
            try:
                if deadline is None:
                    served = gate.acquire()
                else:
                    # Positional and clamped inline: keywords and max() cost
                    # more than the rest of an unblocked acquire.
                    left = deadline - monotonic()
                    served = gate.acquire(True, left) if left > 0.0 else gate.acquire(False)
            except BaseException:
                with self._lock:
                    if waiter.entry is None:
                        self._core.forget_waiter(waiter, nudged=waiter.nudged)
                if waiter.entry is not None:
                    self._give_back(waiter.entry)
                raise
            if served:
                entry = waiter.entry
                if entry is not None:  # handed over: the common case
                    return entry
            core = self._core
            if not served:
                with self._lock:
                    if waiter.entry is None and waiter.error is None and not waiter.nudged:
                        core.forget_waiter(waiter, timed_out=True)
                        raise self._timed_out(waiter)
                gate.acquire()  # woken just too late: free now; take it to re-arm
            if waiter.error is not None:
                raise waiter.error
            if waiter.entry is not None:
                return waiter.entry
            late = None
            with self._lock:
                waiter.nudged = False
                now = monotonic()
                entry = core.checkout_nudged(waiter, waiter.start, now)
                if entry is None and deadline is not None and now >= deadline:
                    core.forget_waiter(waiter, timed_out=True)
                    late = self._timed_out(waiter)
                work = self._take_work() if core.pending else None
            self._run(work)  # before raising: it may serve the waiters behind us
            if late is not None:
                raise late
            if entry is not None:
                return entry

    def _timed_out(self, waiter: _Waiter) -> PoolTimeout:
        # Caller holds the lock.
        core = self._core
        message = core.timeout_message(monotonic() - waiter.start)
        exc = PoolTimeout(f"{self.name}: {message}")
        exc.__cause__ = core.last_connect_error
        return exc

    def _wake(self, waiter: _Waiter, entry: Entry | None) -> bool:
        # Called by the core with the pool lock held; ``None`` is a nudge.
        if entry is None:
            waiter.nudged = True
        else:
            waiter.entry = entry
        waiter.gate.release()
        return True

    def _refuse(self, waiter: _Waiter, error: PoolConnectError) -> bool:
        # Called by the core with the pool lock held, like ``_wake``; a
        # thread that gives up leaves the queue under that lock first.
        waiter.error = error
        waiter.gate.release()
        return True

    def _give_back(self, entry: Entry) -> None:
        core = self._core
        with self._lock:
            core.checkin(entry, monotonic())
            if not core.pending and not core.closing:
                return
            work = self._take_work()
            self._notify_if_closing()
        self._run(work)

    def _check_on_checkout(self, entry: Entry) -> bool:
        try:
            self._ping(entry.conn)
            if self._hosts is not None:  # a promotion shows here (on PostgreSQL 14+, for free)
                standby = self._adapter.in_recovery(entry.conn)
                with self._lock:
                    self._core.role_seen(entry, standby, monotonic())
        except Exception:
            self._log_check_failed(entry)
            self._adapter.terminate(entry.conn)
            return False
        except BaseException:
            self._discard(entry, lost=False)
            raise
        return True

    def _check_racing(self, entry: Entry, start: float, deadline: float) -> bool:
        """Check ``entry`` on a thread of its own, waiting only until ``deadline``.

        The check is bounded by ``reset_timeout``, which this caller cannot
        wait for.  If the deadline comes first the caller gets ``PoolTimeout``
        and the check runs on; a connection that passes is kept (handed to the
        next waiter or made idle) rather than condemned by a caller in a hurry.
        """
        race = _CheckRace()
        threading.Thread(
            target=self._check_for_race, args=(entry, race),
            name=f"{self.name} check #{entry.id}", daemon=True,
        ).start()
        core = self._core
        try:
            race.done.wait(max(0.0, deadline - monotonic()))
        except BaseException:  # interrupted: leave the check to finish the job
            with self._lock:
                race.left = True
                late = race.ok
                if late is not None:  # it finished just now, for nobody
                    core.check_done(entry, late, monotonic(), borrower_left=True)
                work = self._take_work()
            self._run(work)
            raise
        with self._lock:
            if race.ok is not None:
                return race.ok
            race.left = True
            core.count_timeout()
            exc = PoolTimeout(
                f"{self.name}: no connection available after waiting "
                f"{monotonic() - start:.2g}s; the health check of connection #{entry.id} was "
                "still running (it goes on, and the connection is kept if it passes)"
            )
            exc.__cause__ = core.last_connect_error
        raise exc

    def _check_for_race(self, entry: Entry, race: _CheckRace) -> None:
        ok = self._check_on_checkout(entry)
        with self._lock:
            if not race.left:
                race.ok = ok
                race.done.set()
                return
            self._core.check_done(entry, ok, monotonic(), borrower_left=True)
            work = self._take_work()
            self._notify_if_closing()
        self._run(work)

    def _ping(self, conn: Any) -> None:
        if self._check is not None:
            self._bounded(conn, self._check, conn)
        else:
            self._bounded(conn, self._adapter.ping, conn)

    def _bounded(self, conn: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking IO on ``conn``; past ``reset_timeout`` its socket is cut."""
        token = self._watchdog.arm(self._reset_timeout, self._adapter.interrupt, conn)
        try:
            result = fn(*args)
        finally:
            cut = self._watchdog.disarm(token)
        if cut:
            raise TimeoutError(f"gave up after {self._reset_timeout:g}s; connection cut off")
        return result

    def release(self, conn: Any) -> None:
        """Give a leased connection back; see :meth:`AsyncPool.release`."""
        self._return(conn, None)

    def _return(self, conn: Any, status: int | None) -> None:
        # ``status``: the driver connection's status, if the caller just read it.
        if type(conn) is not self._lease_class or conn._pool is not self:
            self._check_lease(conn)  # raises
        entry = conn._entry
        undo = conn._undo
        raw = conn._con
        if status is None and raw is not RELEASED:
            status = self._status(raw)
        clean = status == CLEAN and undo is None and self._clean_release
        core = self._core
        with self._lock:
            # Voided under the lock: of two threads releasing one lease, one
            # wins.  end_lease's work inline; it is called to raise.
            raw = conn._con
            if raw is RELEASED:
                end_lease(conn)  # raises: released already
            set_con(conn, RELEASED)
            made = conn._made
            if made is not None:  # what the lease made refuses use from now on
                conn._void(raw, made)
            if clean:
                core.checkin(entry, monotonic())
                if not core.pending and not core.closing:
                    return
                work = self._take_work()
                self._notify_if_closing()
        if clean:
            self._run(work)
        else:
            self._release_slow(entry, raw, undo)

    putconn = release

    # Integrations that keep their own record of each checkout (SQLAlchemy's
    # pool) borrow entries rather than leases: no lease is made or ended, and
    # the release skips the lease's checks (measured: a third of an acquire
    # and release).

    def _lend(self) -> Entry:
        """``acquire()`` for an integration: the entry, ``IN_USE``, with no
        lease made.  It goes back through ``_take_back``."""
        entry, waiter = self._checkout_or_enqueue()
        if (
            waiter is None
            and entry is not None
            and entry.state is IN_USE
            and not self._is_closed(entry.conn)
        ):
            return entry
        core = self._core
        # Queued with a connect under way for every waiter: room was made for it.
        timeout = self._lend_timeout(waiter is not None and core.connecting >= len(core.waiters))
        lease = self._acquire_rest(entry, waiter, timeout)
        end_lease(lease)
        return lease._entry  # type: ignore[no-any-return]

    def _take_back(self, entry: Entry) -> None:
        """``release()`` of an entry from ``_lend``."""
        raw = entry.conn
        if self._clean_release and self._status(raw) == CLEAN:
            self._give_back(entry)
        else:
            self._release_slow(entry, raw, None)

    def _release_slow(self, entry: Entry, raw: Any, undo: list[Any] | None) -> None:
        status = self._status(raw)
        if status == BROKEN or entry.state is not IN_USE:
            self._discard(entry, lost=status == BROKEN)
            return
        core = self._core
        with self._lock:
            now = monotonic()
            keep = core.keeps(entry, now)
            if keep:
                core.begin_reset(entry)
            else:  # it would be closed after its reset: close it now, unreset
                core.discard(entry, now, lost=False)
                work = self._take_work()
                self._notify_if_closing()
        if not keep:
            self._run(work)
            return
        try:
            ok = self._bounded(raw, self._reset, raw, status, undo)
        except Exception as exc:
            self._log_reset_failed(entry, exc)
            ok = False
        except BaseException:
            self._discard(entry, lost=False)
            raise
        if not ok or self._status(raw) != CLEAN:
            self._discard(entry, lost=self._is_closed(raw))
            return
        self._give_back(entry)

    def _reset(self, raw: Any, status: int, undo: list[Any] | None) -> bool:
        adapter = self._adapter
        mode = self._reset_mode
        if status == BUSY and not adapter.settle(raw, self._reset_timeout):
            return False
        if mode is FULL or (undo is not None and FULL_RESET in undo):
            adapter.full_reset(raw)
        elif mode is not NO_RESET and self._status(raw) == IN_TRANSACTION:
            adapter.rollback(raw)
        if undo:  # after the rollback: psycopg takes no autocommit change inside one
            adapter.undo(raw, undo)
        if mode is CUSTOM:
            self._reset_hook(raw)  # type: ignore[misc]
        return True

    def _discard(self, entry: Entry, *, lost: bool) -> None:
        if entry.conn is not None and entry.state not in (CLOSING, CLOSED):
            self._adapter.terminate(entry.conn)
        with self._lock:
            self._core.discard(entry, monotonic(), lost=lost)
            work = self._take_work()
            self._notify_if_closing()
        self._run(work)

    def _notify_if_closing(self) -> None:
        # Caller holds the lock.
        if self._core.closing:
            self._changed.notify_all()

    def connection(self, *, timeout: float | None = DEFAULT) -> _Connection:
        """``with pool.connection() as conn:`` leases a connection for the block.

        The block commits on success and rolls back on error (unless the
        connection is in autocommit), as psycopg_pool does.
        """
        return _Connection.made_for(self, timeout)

    # ------------------------------------------------------------------
    # background work

    def _take_work(self) -> list[Entry]:
        # Caller holds the lock.
        core = self._core
        work, core.pending = core.pending, []
        return work

    def _run(self, work: list[Entry] | None) -> None:
        if not work:
            return
        workers = self._workers
        for entry in work:
            state = entry.state
            if state is CLOSING and (entry.conn is None or self._is_closed(entry.conn)):
                self._hard_close(entry)
            elif workers is None or self._stopping.is_set():
                if state is CONNECTING:
                    with self._lock:
                        self._core.connect_aborted(entry)
                else:
                    self._hard_close(entry)
            elif state is CONNECTING:
                workers.submit(self._connect, entry, detached=True)
            elif state is CLOSING:
                if self._close_inline:
                    self._close(entry)
                else:
                    workers.submit(self._close, entry)
            elif state is PINGING:
                workers.submit(self._keepalive, entry)

    def _connect(self, entry: Entry) -> None:
        try:
            self._connect_until_done(entry)
        finally:
            with self._lock:
                self._notify_if_closing()  # close() waits for connects to end

    def _connect_until_done(self, entry: Entry) -> None:
        core = self._core
        hosts = self._hosts
        while True:
            if self._closed:  # queued before close() and started after it
                with self._lock:
                    core.connect_aborted(entry)
                return
            if hosts is not None:
                # Several hosts: the core picks this attempt's host, or says
                # how long until one may be tried.
                with self._lock:
                    wait = core.aim(entry, monotonic())
                if wait:
                    if not self._wait_to_retry(entry, wait):
                        return
                    continue
            try:
                conn, standby = self._open_one(entry)
            except BaseException as exc:
                # Even a KeyboardInterrupt raised by a hook only fails this
                # connect: a worker thread has no caller to hand it to, and
                # dying would leave the entry connecting for ever.
                now = monotonic()
                exc, configured, permanent = self._failed_connect(exc)
                with self._lock:
                    again = core.rejection is not None
                    delay = core.connect_failed(
                        entry, exc, now, permanent=permanent, configured=configured
                    )
                    tell = core.reconnect_failed_due(now)
                self._log_connect_failed(exc, delay, permanent, again)
                if tell and self._reconnect_failed is not None:
                    self._notify_reconnect_failed()
                if delay is None or not self._wait_to_retry(entry, delay):
                    return
                continue
            with self._lock:
                closed = self._closed
                landed = True
                if closed:
                    core.connect_aborted(entry)
                else:
                    now = monotonic()
                    failing_since = core.failing_since
                    if standby is None:
                        core.connect_succeeded(entry, conn, now)
                    else:
                        landed = core.connect_landed(entry, conn, standby, now)
                    work = self._take_work()
                    self._changed.notify_all()
            if closed or not landed:
                self._adapter.terminate(conn)  # closing, or a role this pool does not take
            if not closed:
                if landed and failing_since is not None:
                    self._log_recovered(now - failing_since)
                self._run(work)
            if landed:
                return

    def _wait_to_retry(self, entry: Entry, delay: float) -> bool:
        """Wait ``delay`` before ``entry``'s next connect attempt; ``False``
        (the connect given up) when the pool stops meanwhile or the core no
        longer wants it."""
        stopped = self._stopping.wait(delay)
        with self._lock:
            again = not stopped and self._core.retry_due(entry, monotonic())
            if not again:
                self._core.connect_aborted(entry)
        return again

    def _open_one(self, entry: Entry) -> tuple[Any, bool | None]:
        """Connect and configure; with several hosts, also learn the server's role.

        Returns the connection and whether its server is a standby (``None``
        with one host, where the pool does not ask).
        """
        start = monotonic()
        seconds = self._connect_timeout
        adapter = self._adapter
        conn = adapter.connect(self._dsn, self._kwargs_for(entry), seconds)
        standby = None
        try:
            if self._hosts is not None:
                standby = adapter.in_recovery(conn)
            if self._configure is not None:
                # libpq's connect_timeout bounded the connect; configure gets
                # what is left of the same budget (0: no bound, as for libpq).
                left = max(0.0, seconds - (monotonic() - start)) if seconds > 0 else None
                self._configure_in_time(conn, left)
                try:
                    self._check_configured(conn)
                except Exception as exc:
                    raise ConfigureFailed(exc) from None
        except BaseException:
            adapter.terminate(conn)
            raise
        return conn, standby

    def _configure_in_time(self, conn: Any, seconds: float | None) -> None:
        """Run ``configure``; past ``seconds`` the watchdog cuts ``conn`` off
        under it, and the connect fails with ``_connect_timed_out``."""
        assert self._configure is not None
        token = None if seconds is None else self._watchdog.arm(
            seconds, self._adapter.interrupt, conn
        )
        try:
            self._configure(conn)
        except BaseException as exc:
            if token is not None and self._watchdog.disarm(token):
                raise self._connect_timed_out() from exc
            if isinstance(exc, Exception):  # the hook's own failure
                raise ConfigureFailed(exc) from None
            raise
        if token is not None and self._watchdog.disarm(token):
            raise self._connect_timed_out()

    def _notify_reconnect_failed(self) -> None:
        """Call ``reconnect_failed`` on a daemon thread of its own: however
        long the callback takes, the connect loop goes on retrying meanwhile."""
        threading.Thread(
            target=self._run_reconnect_failed, name=f"{self.name} reconnect_failed", daemon=True
        ).start()

    def _run_reconnect_failed(self) -> None:
        assert self._reconnect_failed is not None
        try:
            self._reconnect_failed(self)
        except BaseException:  # its own thread: nobody to pass it on to
            self._log.exception("%s: reconnect_failed callback raised", self.name)

    def _close(self, entry: Entry) -> None:
        try:
            self._adapter.close(entry.conn)
        except Exception:
            self._log.debug("%s: graceful close of #%d failed", self.name, entry.id, exc_info=True)
            self._adapter.terminate(entry.conn)
        with self._lock:
            self._core.closed(entry)

    def _keepalive(self, entry: Entry) -> None:
        ok = True
        standby = None
        try:
            self._ping(entry.conn)
            if self._hosts is not None:  # a promotion shows here (on PostgreSQL 14+, for free)
                standby = self._adapter.in_recovery(entry.conn)
        except Exception:
            ok = False
            self._adapter.terminate(entry.conn)
        with self._lock:
            self._core.ping_done(entry, ok, monotonic(), standby=standby)
            work = self._take_work()
            self._notify_if_closing()
        self._run(work)

    def _apply(self, decide: Callable[[float], object]) -> None:
        """Run a core decision under the lock, then the IO it asks for."""
        with self._lock:
            decide(monotonic())
            work = self._take_work()
        self._run(work)

    def _housekeeping_tick(self) -> None:
        self._apply(self._core.housekeeping)
        if self._config.leak_timeout is not None:
            with self._lock:
                leaks = self._leak_infos(monotonic())
            self._report_leaks(leaks)  # logs and callbacks: outside the lock

    def _budget_poke(self, word: str) -> None:
        workers = self._workers
        if workers is None or self._stopping.is_set():
            raise PoolClosed(f"{self.name} is not serving")
        workers.submit(self._apply, lambda now: self._budget_event(word, now))

    # ------------------------------------------------------------------
    # administration

    def stats(self) -> PoolStats:
        """A frozen snapshot of sizes and counters; see :class:`PoolStats`."""
        with self._lock:
            return self._core.stats()

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change ``min_size``/``max_size``; the pool grows or shrinks to fit."""
        lo, hi = self._check_resize(min_size, max_size)
        self._apply(lambda now: self._core.resize(lo, hi, now))

    def expire(self) -> None:
        """Replace every connection: idle ones now, leased ones when they return."""
        self._apply(self._core.expire)

    def check(self) -> None:
        """Ping every idle connection now (in this thread); replace failures."""
        with self._lock:
            entries = self._core.check_idle(monotonic())
        for entry in entries:
            self._keepalive(entry)

    # ------------------------------------------------------------------
    # LISTEN/NOTIFY (issue 15): a connection of its own, see pgmarina.listener

    def listener(self) -> Listener:
        """The pool's LISTEN/NOTIFY listener, made on first use; see
        :meth:`AsyncPool.listener` and :class:`~pgmarina.listener.Listener`."""
        with self._lock:
            if self._listener is None:
                if self._closed:
                    raise PoolClosed(f"{self.name} is closed")
                if not self._opened:
                    raise PoolNotOpen(f"{self.name} is not open")
                self._listener = listener = Listener(self)
                # A pool dropped without close() takes its listener along.
                weakref.finalize(self, listener.terminate)
            return self._listener

    def listen(
        self, channel: str, callback: Callable[[Notification], Any], *,
        on_gap: Callable[[Gap], Any] | None = None, timeout: float | None = None,
    ) -> Subscription:
        """Call ``callback(note)`` on the listener's thread for each
        notification on ``channel``, and ``on_gap(gap)`` when some may have
        been missed; see :meth:`~pgmarina.listener.Listener.listen`."""
        return self.listener().listen(channel, callback, on_gap=on_gap, timeout=timeout)

    def notifications(self, channel: str) -> Notifications:
        """``for note in pool.notifications(channel)``; see
        :class:`~pgmarina.listener.Notifications`."""
        return self.listener().notifications(channel)


class _Connection(ConnectionContextBase):
    """The context manager behind ``pool.connection()``."""

    __slots__ = ()

    def __enter__(self) -> Any:
        if self._conn is not None:
            raise self._in_use("connection")
        # Pool.acquire, with its common case first: once per ``with`` block.
        pool = self._pool
        entry, waiter = pool._checkout_or_enqueue()
        if waiter is None and entry is not None and entry.state is IN_USE:
            conn = entry.conn
            if not pool._is_closed(conn):
                self._conn = lease = pool._new_lease(conn, entry, pool)
                return lease
        self._conn = ENTERING  # a second entry meanwhile is refused too
        try:
            self._conn = lease = pool._acquire_rest(entry, waiter, self._timeout)
        except BaseException:
            self._conn = None
            raise
        return lease

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        conn, self._conn = self._conn, None
        pool = self._pool
        raw = conn._con
        status = None
        if raw is not RELEASED:
            status = pool._quick_status(raw)
            if status != CLEAN:
                status = pool._status(raw)
                if status == IN_TRANSACTION and pool._transactional:
                    try:
                        if exc_type is None:
                            pool._adapter.end_block(raw, False)
                        else:  # bounded like a reset: a partition must not hang it
                            pool._bounded(raw, pool._adapter.rollback, raw)
                    except Exception as end_exc:
                        pool.release(conn)
                        if exc_type is None:
                            raise
                        pool._log_reset_failed(conn._entry, end_exc)
                        return  # the block's own error goes on
                    except BaseException:
                        pool.release(conn)
                        raise
                    status = None
        pool._return(conn, status)


def _forgotten(
    name: str,
    entries: set[Entry],
    adapter: Any,
    workers: _Workers,
    watchdog: _Watchdog,
    stopping: threading.Event,
    pid: int,
) -> None:
    """Finalizer of a Pool collected without ``close()``: stop, drop connections."""
    if stopping.is_set():
        return  # closed properly
    if os.getpid() != pid:
        # A forked child dropping (or exiting with) a pool it inherited: the
        # connections are the parent's sockets, and terminating one would
        # end the parent's session.  The child's copies are left alone.
        return
    stopping.set()
    watchdog.stop()
    workers.stop(0)
    dropped = 0
    for entry in list(entries):
        if entry.conn is not None and entry.state is not CLOSED:
            dropped += 1
            with contextlib.suppress(Exception):  # best effort
                adapter.terminate(entry.conn)
    # An integration whose own objects are dropped unclosed as a matter of
    # course (a SQLAlchemy engine never disposed) says so on its adapter.
    level = logging.DEBUG if getattr(adapter, "collected_quietly", False) else logging.WARNING
    logger.log(
        level, "%s was never closed; its %d connection(s) were dropped when it was collected",
        name, dropped,
    )


def _housekeeping(ref: weakref.ref[Pool], stopping: threading.Event, interval: float) -> None:
    while not stopping.wait(interval):
        if not PoolBase._tick_weakly(ref):
            return


class _RoutedConnection(_Connection):
    """``pool.writer.connection()``: ``pool.connection()`` for a caller that asked for a role."""

    __slots__ = ("_want",)

    _want: str

    def __enter__(self) -> Any:
        if self._conn is not None:
            raise self._in_use("connection")
        self._conn = ENTERING
        try:
            self._conn = lease = self._pool._acquire_for(self._want, self._timeout)
        except BaseException:
            self._conn = None
            raise
        return lease
