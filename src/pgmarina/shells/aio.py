"""AsyncPool: the asyncio shell around :class:`~pgmarina._core.PoolCore`.

The shell owns no policy.  It stamps events with ``time.monotonic()``, hands
them to the core, and carries out what the core left in ``core.pending`` as
background tasks (connect, close, ping).  Because asyncio runs one callback
at a time, the core needs no lock: every call into it completes before any
other task runs.

The fast path, taken when an idle connection is there and nobody waits, is
a list pop in ``acquire`` and a local transaction-status read plus a list
push in ``release``: no futures, timers, tasks or system calls.  Waiting uses
one future per waiter and, while anyone waits with a timeout, one timer.  No
timer stands on the loop otherwise (a pending timer costs every turn of the
loop): housekeeping is ticked from the process's housekeeping clock thread
(``_ticker``) and runs on the loop.

Cancellation never loses a connection:

* a waiter cancelled after it was handed a connection gives it back;
* a borrower cancelled in its health check or reset discards the connection
  (its state is unknown) and the core opens a replacement if one is needed;
* connects run in their own tasks, so a caller giving up does not cancel the
  connect that is on its way to serve the next caller.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
import weakref
from _thread import get_ident as _thread_ident
from asyncio import get_running_loop as _running_loop
from collections.abc import Awaitable, Callable, Coroutine, Generator
from time import monotonic
from types import CoroutineType
from typing import Any

from .._core import Entry
from .._core.entry import CHECKING, CLOSED, CLOSING, CONNECTING, IN_USE, PINGING, RESETTING
from .._lease import FULL_RESET, RELEASED, set_con
from .._lease import end as end_lease
from ..adapters import BROKEN, BUSY, CLEAN, IN_TRANSACTION
from ..adapters.base import bounded as _bounded
from ..errors import PoolClosed, PoolConnectError, PoolError, PoolNotOpen, PoolTimeout
from ..listener import AsyncListener, AsyncNotifications, Gap, Notification, Subscription
from ._common import (
    CUSTOM,
    DEFAULT,
    ENTERING,
    FULL,
    NO_RESET,
    ConfigureFailed,
    ConnectionContextBase,
    PoolBase,
)
from ._ticker import Tick, every

__all__ = ["AsyncPool"]

_INF = float("inf")
#: A release resets its connection in a task of its own, and its caller goes
#: on with an idle connection, only while this many callers or fewer use the
#: pool (see AsyncPool._resets_behind).
_FEW_USERS = 2
_blank = object.__new__

async def _call_hook(hook: Callable[..., Any], *args: Any) -> Any:
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _start_hook(
    hook: Callable[..., Any], arg: Any, seconds: float | None
) -> Awaitable[Any] | None:
    """Call ``hook(arg)``; return what is left to await of it, within ``seconds``, if anything.

    A coroutine's first step is taken here: one that ends without waiting (a
    no-op reset coroutine) leaves nothing to await, and costs no timer: a
    timer armed and cancelled on every release cost more than the rest of
    the release (measured).  One that waits is bounded from its first wait on.
    """
    result = hook(arg)
    if type(result) is CoroutineType and _LAZY_BOUND:
        try:
            step = result.send(None)
        except StopIteration:
            return None
        return _finish_bounded(result, step, seconds)
    if inspect.isawaitable(result):
        return _bounded(result, seconds)
    return None


# asyncio.timeout (3.11+) binds to the running task, so a coroutine begun
# outside it can finish inside it; 3.10's wait_for runs another task.
if sys.version_info >= (3, 11):
    _LAZY_BOUND = True

    async def _finish_bounded(
        coro: Coroutine[Any, Any, Any], step: Any, seconds: float | None
    ) -> Any:
        async with asyncio.timeout(seconds):  # this task's: the rest is bounded
            return await _Resumed(coro, step)

else:  # pragma: no cover - Python 3.10
    _LAZY_BOUND = False

    async def _finish_bounded(
        coro: Coroutine[Any, Any, Any], step: Any, seconds: float | None
    ) -> Any:
        raise NotImplementedError


async def _raising(exc: BaseException) -> None:
    """An awaitable that raises ``exc``: a reset hook's error, reported when awaited."""
    raise exc


class _Resumed:
    """Await a coroutine whose first step was already taken (it yielded ``step``)."""

    __slots__ = ("_coro", "_step")

    def __init__(self, coro: Coroutine[Any, Any, Any], step: Any) -> None:
        self._coro = coro
        self._step = step

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, step = self._coro, self._step
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # the task's cancellation, for one: pass it on
                try:
                    step = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    step = coro.send(sent)
                except StopIteration as done:
                    return done.value


class AsyncPool(PoolBase):
    """An asyncio connection pool for asyncpg or psycopg 3.

    Think of a marina with a fixed number of berths: boats (connections) come
    back to the berth they left, a queue of sailors waits on the quay in the
    order they arrived, and the harbour master (the core) decides who gets
    which boat, when a boat is too old to sail, and when to build another.

    Every argument but ``dsn`` is a keyword; the signature shows each with
    its type and default.

    Durations are seconds, by one rule for every setting and per-call
    timeout (see :class:`~pgmarina._core.PoolConfig`): NaN, negatives and
    non-numbers are refused naming the argument; ``inf`` (and ``None`` where
    shown) is no limit, and so is a timeout of 30 days or more; ``0`` is
    "not at all" where it makes sense and refused where it does not.

    Args:
        dsn: Connection string passed to the driver.
        driver: ``"asyncpg"`` (the default, ``None``), ``"psycopg"``, or an
            adapter object.
        min_size: Connections kept open even when idle.
        max_size: Most connections at once (``None``: ``max(min_size, 10)``).
        timeout: Default acquire timeout in seconds (``None``: wait forever).
        max_waiting: Most queued callers (``0``: unlimited); beyond it
            ``TooManyWaiters`` is raised at once.
        max_lifetime: Replace connections older than this (jittered).
        max_idle: Close connections above ``min_size`` idle for this long
            (``0``: keep none idle above ``min_size``).
        max_uses: Replace a connection after this many leases (``0``: never).
        check_window: Health-check a connection on checkout only if it sat idle
            longer than this; more recent ones are trusted.
        idle_order: ``"lifo"`` (the most recently used idle connection goes
            out first; the default) or ``"fifo"`` (the one idle longest; see
            :class:`~pgmarina._core.PoolConfig`).
        keepalive: Housekeeping pings connections idle this long.
        max_connecting: Connects in parallel at most.
        reconnect_timeout: After failing to connect this long, call
            ``reconnect_failed(pool)`` once (the pool keeps retrying).
        fail_fast_after: After failing to connect this long, acquires that would
            wait raise ``PoolConnectError`` at once.  A connect the server
            rejects (wrong password, no such role or database) makes them
            raise at once from the start, until a connect succeeds.
        fail_fast_waiters: Fail the acquires already waiting too, once
            ``fail_fast_after`` has passed.
        configure_fails_waiter: A connect whose ``configure`` raised also
            fails the acquire that has waited longest, with a
            ``PoolConnectError`` caused by the hook's error; by default the
            connect is retried while acquires wait.
        prefill: Open ``min_size`` connections ahead of demand (the
            default).  ``False``: open connections only for acquires that
            need one, and keep up to ``min_size`` of them however long they
            idle (SQLAlchemy's ``QueuePool`` and ``pool_size``).
        housekeeping_interval: Period of the housekeeping tick (more than 0,
            at most 30 days); it runs on the pool's loop, posted there by one
            clock thread that serves every AsyncPool of the process.
        lifetime_jitter: Fraction of ``max_lifetime`` shaved off at random.
        backoff_initial: First delay before retrying a failed connect.
        backoff_max: Largest reconnect delay; the delay doubles up to it.
        barge_window: Only for the thread :class:`~pgmarina.Pool`; must be 0.
        connect_timeout: Bound on one connect plus ``configure`` (more than 0;
            ``inf``: no limit).  The thread pool hands it to libpq, which
            counts whole seconds, at least 2.
        reset_timeout: Bound on a reset, check or ping round trip (more than
            0; ``inf``: no limit); with asyncpg, on a whole reset, hook
            included, by one timer for the pool.
        reset: ``"auto"`` (roll back only what the local status shows, and
            undo listeners and driver attributes: no round trip for a clean
            connection; session state stays, see the README), ``"full"``
            (the driver's full session reset every time; one lease can ask
            for it with :func:`~pgmarina.reset_on_release`), ``None``
            (nothing), or ``async def reset(conn)`` run after the automatic
            rollback.
        configure: ``async def configure(conn)`` run on each new connection.
        check: ``async def check(conn)`` health check (raise if unhealthy);
            default: ``SELECT 1``.
        reconnect_failed: ``reconnect_failed(pool)`` callback (sync or async),
            run in a task of its own: the pool goes on reconnecting meanwhile.
        pgbouncer: ``True`` when connecting through PgBouncer in transaction
            pooling mode: no named prepared statements (asyncpg's
            ``statement_cache_size=0``, psycopg's ``prepare_threshold=None``;
            psycopg2 needs nothing; a conflicting keyword raises
            ``ValueError``) and no session reset (``reset="full"`` does what
            ``"auto"`` does).  No automatic detection: see the README.
        leak_timeout: Report a lease held longer than this many seconds as
            a probable leak: one WARNING on logger ``pgmarina`` naming the
            code that acquired it (``None``: off; when on, each acquire
            notes its caller's stack, a few microseconds).  Checked by
            housekeeping, so reported up to ``housekeeping_interval`` late.
        on_leak: ``on_leak(info)`` (sync or async) called with a
            :class:`~pgmarina.LeakInfo` for each leak reported.
        hosts: Several servers (``["h1:5432", ("h2", 5433)]``), or name
            them in the DSN as libpq does; the pool picks the host of each
            connect and knows its role (see :attr:`writer`, :attr:`reader`).
        target_session_attrs: With several hosts, the roles the pool
            connects to: libpq's ``any`` (default), ``read-write``/``primary``,
            ``read-only``/``standby``, ``prefer-standby``.
        load_balance_hosts: With several hosts, ``"disable"`` (default: in
            the order given) or ``"random"``.
        connect_kwargs: Keywords for the driver's connect, as a mapping.
        name: Name for ``repr`` and logs.
        **driver_kwargs: Any other keyword goes to the driver's connect too
            (``server_settings={...}`` for asyncpg, ``autocommit=True`` or
            libpq parameters such as ``application_name="app"`` for psycopg).
            One the driver does not take is refused at once.
    """

    _sync = False
    _default_driver = "asyncpg"
    _listener: AsyncListener | None = None  # LISTEN/NOTIFY, made on first use

    __slots__ = (  # (see PoolBase)
        "_asyncio_loop",
        "_callbacks",
        "_connect_tasks",
        "_cut_off",
        "_deadlines",
        "_drained",
        "_filled",
        "_full_inline",
        "_loop",
        "_myself",
        "_reset_watch",
        "_resets_behind",
        "_tasks",
        "_watchdog_at",
        "_watched",
    )

    def _init_shell(self) -> None:
        if self._config.barge_window:
            # Measured: with asyncio a FIFO hand-off wakes no thread, and
            # barging gained nothing (bench/bench_async.py, conc 10 and 100).
            raise ValueError(
                "barge_window is for the thread Pool; AsyncPool hands off in strict FIFO order"
            )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connect_tasks: dict[Entry, asyncio.Task[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: ``_loop`` when it is one of asyncio's own, whose ``_thread_id`` says
        #: which thread runs it (see _on_loop); else ``None``.
        self._asyncio_loop: asyncio.BaseEventLoop | None = None
        self._filled: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._housekeeper: Tick | None = None
        self._deadlines: dict[asyncio.Future[Entry], tuple[float, float]] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = _INF
        # reconnect_failed callbacks under way: held here so they are not
        # collected mid-flight, and neither awaited by connects nor by close().
        self._callbacks: set[asyncio.Task[Any]] = set()
        # The reset watch (see _unwatch_reset), for adapters it can serve.
        self._watched = self._adapter.terminate_interrupts and self._reset_timeout != _INF
        # reset="full"'s common release is written inline in _Connection.__aexit__.
        self._full_inline = self._watched and self._reset_mode is FULL
        self._cut_off: set[Entry] = set()
        # Resets run in a task of their own, behind a caller that went on.
        # A release resets in the background only while few callers use the
        # pool (_FEW_USERS: leases out and resets awaited in line, the
        # releasing one included): then the caller's next acquire is served
        # by an idle connection at once while this one is reset (measured,
        # reset="full": 2.8x asyncpg's pool at 1 task, 1.4x at 2, against
        # 1.2x with the reset awaited in line).  With more callers the
        # connections and the CPU are kept busy either way, and a task per
        # release costs more than it buys (measured on 2 cores: 1.0x at 3
        # tasks, against 1.4x in line; 1.3x against 1.4-1.5x at 10).
        self._resets_behind = 0
        self._reset_watch: asyncio.TimerHandle | None = None
        self._myself = weakref.ref(self)

    # ------------------------------------------------------------------
    # lifecycle

    async def open(self, wait: bool = False, timeout: float | None = DEFAULT) -> None:
        """Start the pool: open ``min_size`` connections and housekeeping.

        Args:
            wait: Also wait until ``min_size`` connections are open.
            timeout: Bound for ``wait`` (default: the pool's ``timeout``).

        Raises:
            PoolClosed: the pool was closed; pools do not reopen.
            PoolTimeout: ``wait`` timed out (see :meth:`wait`); the pool is
                closed again before the error propagates.
            PoolConnectError: ``wait`` failed fast (see :meth:`wait`); the pool
                is closed again before the error propagates.
        """
        self._check_timeout(timeout)  # before starting anything
        self._start()
        if wait:
            try:
                await self.wait(timeout)
            except BaseException:
                await self.close(timeout=0)
                raise

    def _start(self) -> None:
        """What ``open()`` does before it waits: it needs a running loop, not an await."""
        if self._closed:
            raise PoolClosed(f"{self.name} is closed and cannot be reopened")
        if not self._opened:
            self._loop = loop = asyncio.get_running_loop()
            if isinstance(loop, asyncio.BaseEventLoop):
                self._asyncio_loop = loop
            self._filled = asyncio.Event()
            self._drained = asyncio.Event()
            self._opened = True
            self._core.open(monotonic())
            self._drain()
            self._update_filled()
            # Ticked from the housekeeping clock's thread (see _ticker): no
            # timer stands on the loop.  Holds the pool only weakly, so a
            # forgotten pool can be collected instead of being kept alive by
            # its own housekeeping.
            self._housekeeper = every(
                self._loop,
                self._config.housekeeping_interval,
                functools.partial(PoolBase._tick_weakly, weakref.ref(self)),
            )

    async def wait(self, timeout: float | None = DEFAULT) -> None:
        """Wait until ``min_size`` connections are open.

        Raises:
            PoolNotOpen: ``open()`` was not called.
            PoolTimeout: not filled within ``timeout``.
            PoolConnectError: connects have failed for ``fail_fast_after``.
        """
        seconds = self._check_timeout(timeout)  # first, as the thread Pool does
        if not self._opened or self._filled is None:
            raise PoolNotOpen(f"{self.name} is not open")
        start = monotonic()
        while not self._filled.is_set():
            if self._closed:
                raise PoolClosed(f"{self.name} is closed")
            problem = self._fill_problem(start, seconds, monotonic())
            if problem is not None:
                raise problem
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> AsyncPool:
        await self.open(wait=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, timeout: float | None = 10.0, *, wait: bool = True) -> None:
        """Close gracefully.

        New acquires fail with ``PoolClosed`` at once, and so do queued ones.
        Idle connections close now; leased ones close as they come back.  If
        leases are still out after ``timeout`` seconds (``None`` or ``inf``:
        wait for ever), their connections are terminated under their borrowers.

        Args:
            timeout: How long to wait for the leases (and for connects in flight).
            wait: ``False`` waits for no lease: ``close()`` returns once the
                idle connections are closed, and each leased one is closed
                when it comes back, however late (psycopg_pool's ``close``).
        """
        seconds = self._check_close_timeout(timeout)
        core = self._core
        if not self._closed:
            self._shut("closed while waiting")
            self._drain()
        # Every close() waits for the leases, not just the first: a second or
        # concurrent call, or one after a cancelled close(), returns only when
        # the pool is drained or its own timeout terminated what was left.
        if wait and self._drained is not None and not core.drained:
            try:
                await asyncio.wait_for(self._drained.wait(), seconds)
            except asyncio.TimeoutError:
                self._log.warning(
                    "%s: leases still out after %.3gs; terminating them", self.name, seconds
                )
                self._terminate_leased()
        if self._listener is not None:
            await self._listener.aclose()
        await self._join()

    def terminate(self) -> None:
        """Close at once: fail waiters, cancel connects, drop every connection."""
        core = self._core
        if not self._closed:
            self._shut("terminated")
        self._terminate_leased()
        work, core.pending = core.pending, []
        for entry in work:
            self._hard_close(entry)
        # A close task cancelled below before its first step never runs its
        # ``finally`` either: close what it was to close, here.
        for entry in [e for e in core.entries if e.state is CLOSING]:
            self._hard_close(entry)
        for task in list(self._tasks):
            task.cancel()
        if self._listener is not None:
            self._listener.terminate()

    def _shut(self, why: str) -> None:
        """Stop serving: fail queued waiters and stop background work."""
        self._closed = True
        for fut in self._core.close(monotonic()):
            if not fut.done():
                fut.set_exception(PoolClosed(f"{self.name} {why}"))
        self._stop_background()

    def _terminate_leased(self) -> None:
        for entry in self._core.terminate(monotonic()):
            self._hard_close(entry)
        if self._drained is not None:
            self._drained.set()

    def _hard_close(self, entry: Entry) -> None:
        self._terminate_quietly(entry.conn)
        self._core.closed(entry)

    def _stop_background(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        for entry, task in list(self._connect_tasks.items()):
            task.cancel()
            # A task cancelled before its first step never runs its body,
            # ``finally`` included: give up on its entry here (a no-op once
            # the connect has ended).
            self._connect_tasks.pop(entry, None)
            self._core.connect_aborted(entry)

    async def _join(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------
    # acquire / release

    def acquire(self, *, timeout: float | None = DEFAULT) -> _Acquire:
        """Lease a connection, asyncpg style: awaited or as an async context.

        ``conn = await pool.acquire()`` returns the lease; give it back with
        :meth:`release`.  ``async with pool.acquire() as conn:`` releases it
        when the block ends, with a plain release as asyncpg's pool does: no
        commit, so with psycopg a transaction left open is rolled back (use
        :meth:`connection` to commit on success).  Nothing is taken from the
        pool until the result is awaited or entered, and that is when these
        are raised.

        Raises:
            PoolTimeout: none became available within ``timeout``.
            TooManyWaiters: ``max_waiting`` callers already wait.
            PoolConnectError: the pool is failing to connect (fail fast).
            PoolClosed, PoolNotOpen: the pool is not serving.
        """
        # ConnectionContextBase.made_for, inline: this runs once per acquire.
        if timeout is not DEFAULT:
            self._check_timeout(timeout)
        ctx = _blank(_Acquire)
        ctx._pool = self
        ctx._timeout = timeout
        ctx._conn = None
        return ctx

    def _take(self) -> Any:
        """Acquire's fast path, with no await: a lease when a ready idle
        connection is at hand, else the entry the slow path must deal with
        (being checked, or dead), else ``None`` (wait).

        Raises:
            PoolError: the caller runs on another event loop than the pool.
        """
        if not self._on_loop():
            self._check_loop()  # raises, unless the pool is not open yet
            return None
        core = self._core
        if core.waiters:  # checkout() would say "queue": strict FIFO, no barging here
            return None
        entry = core.checkout(monotonic())
        if entry is not None and entry.state is IN_USE and not core.pending:
            conn = entry.conn
            if not self._is_closed(conn):
                return self._new_lease(conn, entry, self)
        return entry

    def _routed_connection(self, want: str, timeout: Any) -> _RoutedConnection:
        """``pool.writer.connection()`` / ``pool.reader.connection()``."""
        ctx = _RoutedConnection.made_for(self, timeout)
        ctx._want = want
        return ctx

    async def _acquire_for(self, want: str, timeout: Any) -> Any:
        """An acquire for a caller that asked for a role (``pool.writer.acquire()``)."""
        self._check_timeout(timeout)
        self._check_loop()
        core = self._core
        entry = core.checkout_for(want, monotonic())
        if entry is not None and entry.state is IN_USE and not core.pending:
            conn = entry.conn
            if not self._is_closed(conn):
                return self._new_lease(conn, entry, self)
        return await self._acquire_slow(entry, timeout, want)

    async def _acquire_slow(
        self, entry: Entry | None, timeout: Any, want: str | None = None
    ) -> Any:
        """The rest of an acquire whose fast path found no ready connection.

        ``entry`` is what the fast path's checkout returned: one to check or
        to throw away, or ``None`` (nothing idle, or callers queue already),
        in which case the caller queues at once: checking out again could not
        find anything, since nothing ran in between.  A caller on another
        event loop was refused before it came here.

        Under contention most acquires come here, so the common steps are
        written inline (measured: each helper call cost about 1 % of a cycle
        at 100 tasks on 10 connections).
        """
        seconds = self._config.timeout if timeout is DEFAULT else self._check_timeout(timeout)
        core = self._core
        start = monotonic()
        deadline = None if seconds is None else start + seconds
        # A waiter with the pool's own timeout, queued at ``start``, needs no
        # note of its deadline (see _on_watchdog); any other one is listed.
        listed = deadline is not None and timeout is not DEFAULT
        queued = start
        if core.pending:
            self._drain()
        while True:
            if entry is None:
                fut = self._queue_up(queued, deadline, start, listed, want)
                try:
                    entry = await fut
                except BaseException:
                    self._waiter_left(fut)
                    raise
                finally:
                    if listed:
                        del self._deadlines[fut]
                # Handed over leased, by whoever just found it live: its
                # release, connect or check (see PoolCore._give).
                return self._new_lease(entry.conn, entry, self)
            if self._is_closed(entry.conn):
                core.discard(entry, monotonic())
                entry = None
            elif entry.state is CHECKING:
                ok = await self._check_on_checkout(entry, start, deadline)
                if not core.check_done(entry, ok, monotonic()):
                    entry = None
            if core.pending:
                self._drain()
            if entry is not None:
                return self._new_lease(entry.conn, entry, self)
            entry = core.checkout(monotonic()) if want is None else core.checkout_for(
                want, monotonic()
            )
            # Queued again, if need be, later than at ``start``: listed.
            listed = deadline is not None
            queued = monotonic()

    def _queue_up(
        self, queued: float, deadline: float | None, start: float, listed: bool,
        want: str | None = None,
    ) -> asyncio.Future[Entry]:
        """Queue a waiter (at ``queued``, for ``want``); returns its future.

        The one place a caller waits: a future in the core's queue.  The
        caller awaits it, calls ``_waiter_left`` if it leaves, and deletes
        its entry in ``_deadlines`` if ``listed`` (see _on_watchdog); a
        waiter queued at ``start`` with the pool's own timeout is not.

        Raises:
            PoolNotOpen, PoolClosed, TooManyWaiters, PoolConnectError: as
                ``PoolCore.enqueue`` refuses.
        """
        loop = self._loop
        if not self._opened or loop is None:
            raise PoolNotOpen(f"{self.name} is not open; call open() or use 'async with'")
        core = self._core
        fut: asyncio.Future[Entry] = loop.create_future()
        try:
            if want is None:
                core.enqueue(fut, queued)
            else:
                core.enqueue_for(fut, want, queued)
        finally:  # refused or not, carry out what the checkout before it asked for
            if core.pending:
                self._drain()
        if deadline is not None:
            if listed:
                self._deadlines[fut] = (deadline, start)
            if deadline < self._watchdog_at:
                try:
                    self._arm_watchdog(deadline)
                except BaseException:
                    if listed:
                        del self._deadlines[fut]
                    core.forget_waiter(fut)
                    raise
        return fut

    def _on_loop(self) -> bool:
        """Whether the caller runs on the pool's event loop (``False`` before open).

        asyncio's own loops note the thread that runs them, and a thread runs
        one loop at a time, so that is asked when it can be: asyncio's
        ``get_running_loop()`` makes a system call (``getpid``) every time,
        which cost more than the rest of a checkout (measured: up to 3 % of a
        SQLAlchemy async engine's cycle at 10 tasks).
        """
        mine = self._asyncio_loop
        if mine is not None:
            return mine._thread_id == _thread_ident()  # type: ignore[attr-defined,no-any-return]
        return _running_loop() is self._loop

    def _check_loop(self) -> None:
        """Refuse a caller on another event loop than the one that opened the pool.

        The pool's futures, timers and tasks live on that loop, and so do its
        driver connections; a waiter queued from another loop could never be
        woken and would swallow the next connection handed to it.
        """
        loop = self._loop
        if loop is not None and _running_loop() is not loop:
            raise PoolError(
                f"{self.name} belongs to the event loop that opened it and cannot be used "
                "from another one; open one pool per event loop"
            )

    def _waiter_left(self, fut: asyncio.Future[Entry]) -> None:
        """A waiter was cancelled (or failed): it leaves, and loses nothing."""
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            # Handed a connection just as it was cancelled: pass it on.
            self._give_back(fut.result())
        else:
            self._core.forget_waiter(fut)

    # One timer serves every waiter's deadline: it is armed for the earliest
    # deadline and, when it fires, fails the overdue waiters and re-arms for
    # the next one.  The deadlines of waiters with the pool's own timeout
    # come in the order they queued, so the core's queue holds them (queued
    # at + timeout); others are listed in ``_deadlines``.  A waiter served in
    # time costs no timer handle and, with the pool's timeout, nothing more
    # (measured: a dict insert and delete per waiter was 1 % of a cycle at
    # 100 tasks on 10 connections).

    def _arm_watchdog(self, when: float) -> None:
        loop = self._loop
        assert loop is not None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog_at = when
        # Holds the pool weakly, as the reset watch does: a pool dropped
        # unclosed is collected now, not once its last waiter's deadline passed.
        self._watchdog = loop.call_at(
            loop.time() + (when - monotonic()), _watchdog_fired, self._myself
        )

    def _on_watchdog(self) -> None:
        self._watchdog = None
        self._watchdog_at = _INF
        now = monotonic() + 0.0005  # timers may fire a hair early
        following = _INF
        listed = self._deadlines
        for fut, (deadline, start) in list(listed.items()):
            if deadline <= now:
                self._wait_timed_out(fut, start)
            elif deadline < following:
                following = deadline
        seconds = self._config.timeout
        if seconds is not None:
            for fut, queued in self._core.queue():  # oldest first
                if fut in listed:
                    continue
                deadline = queued + seconds
                if deadline > now:
                    following = min(following, deadline)
                    break
                self._wait_timed_out(fut, queued)
        if following < _INF:
            self._arm_watchdog(following)

    def _wait_timed_out(self, fut: asyncio.Future[Entry], start: float) -> None:
        if fut.done():
            return
        core = self._core
        core.forget_waiter(fut, timed_out=True)
        exc = PoolTimeout(f"{self.name}: {core.timeout_message(monotonic() - start)}")
        exc.__cause__ = core.last_connect_error
        fut.set_exception(exc)

    @staticmethod
    def _wake(waiter: asyncio.Future[Entry], entry: Entry | None) -> bool:
        # No barging here, so no nudges: entry is never None.  A waiter that
        # left is a done future (cancelled, or failed by its timeout).
        try:
            waiter.set_result(entry)  # type: ignore[arg-type]
        except asyncio.InvalidStateError:
            return False
        return True

    def _refuse(self, waiter: asyncio.Future[Entry], error: PoolConnectError) -> bool:
        if waiter.done():  # it left: cancelled, or failed by its timeout
            return False
        waiter.set_exception(error)
        return True

    def _give_back(self, entry: Entry) -> None:
        self._core.checkin(entry, monotonic())
        self._after_checkin()

    async def _check_on_checkout(self, entry: Entry, start: float, deadline: float | None) -> bool:
        """Health-check ``entry`` for its borrower; ``True``: it passed.

        The check runs in a task of its own, bounded by ``reset_timeout``;
        the borrower waits for it only up to its own deadline.  When the
        deadline comes first (``PoolTimeout``) or the borrower is cancelled,
        the check goes on in the background: a caller that gives up must not
        condemn a healthy connection, which is kept (or handed to the next
        waiter) if it passes.
        """
        loop = self._loop
        assert loop is not None
        check = loop.create_task(self._run_check(entry))
        self._track(check)
        wait = None if deadline is None else max(0.0, deadline - monotonic())
        try:
            done, _ = await asyncio.wait((check,), timeout=wait)
        except BaseException:
            check.add_done_callback(functools.partial(self._check_left_behind, entry))
            raise
        if done:
            if check.cancelled():  # the pool was terminated under the check
                raise PoolClosed(f"{self.name} was terminated during a health check")
            return check.result()
        check.add_done_callback(functools.partial(self._check_left_behind, entry))
        core = self._core
        core.count_timeout()
        exc = PoolTimeout(
            f"{self.name}: no connection available after waiting {monotonic() - start:.2g}s; "
            f"the health check of connection #{entry.id} was still running (it goes on in "
            "the background, and the connection is kept if it passes)"
        )
        exc.__cause__ = core.last_connect_error
        raise exc

    async def _run_check(self, entry: Entry) -> bool:
        try:
            await self._ping(entry.conn, self._reset_timeout)
            if self._hosts is not None:  # a promotion shows here (on PostgreSQL 14+, for free)
                standby = await self._adapter.in_recovery(entry.conn)
                self._core.role_seen(entry, standby, monotonic())
        except asyncio.CancelledError:  # the pool is being terminated
            self._adapter.terminate(entry.conn)
            self._core.discard(entry, monotonic())
            self._drain()
            raise
        except Exception:
            self._log_check_failed(entry)
            self._adapter.terminate(entry.conn)
            return False
        return True

    def _check_left_behind(self, entry: Entry, check: asyncio.Task[bool]) -> None:
        """A check whose borrower left ended: keep the connection if it passed."""
        if check.cancelled():
            return  # the check discarded the connection itself
        self._core.check_done(entry, check.result(), monotonic(), borrower_left=True)
        self._after_checkin()

    def _ping(self, conn: Any, timeout: float) -> Awaitable[Any]:
        if self._check is not None:
            return _bounded(_call_hook(self._check, conn), timeout)
        return self._adapter.ping(conn, timeout)  # type: ignore[no-any-return]

    async def release(self, conn: Any) -> None:
        """Give a leased connection back.

        A clean connection (no transaction, nothing noted on the lease) goes
        back at once, without a round trip.  Otherwise it is reset per
        ``reset=``; no one else gets it until that is done.  When other
        connections sit idle and at most two callers use the pool, the reset
        runs in a background task and the caller goes on at once (its next
        acquire is served by another connection while this one is cleaned);
        otherwise the caller waits for the reset, which costs less than
        queueing for the connection it just gave back, or than a task per
        release on a busy CPU.  A connection that cannot be reset, or whose
        reset is cancelled, is discarded and replaced.

        Raises:
            TypeError: ``conn`` is not a lease from this kind of pool.
            ValueError: ``conn`` belongs to another pool.
            ConnectionReleasedError: ``conn`` was already released.
        """
        reset = self._return(conn)
        if reset is not None:
            await reset

    def _return(
        self, conn: Any, status: int | None = None, timeout: float | None = None,
        peer: bool = False,
    ) -> Awaitable[None] | None:
        """Check the lease in; returns the reset to await, if the caller must.

        ``status`` is the driver connection's status if the caller just read it.

        For façades whose peers' release waits for the reset as asyncpg's
        ``release(conn, timeout=)`` does: ``timeout`` (checked by the caller)
        bounds the whole reset, on top of ``reset_timeout``.  With ``peer``
        the reset the caller awaits raises what made it fail (``TimeoutError``
        for a cancelled query that would not settle) after discarding the
        connection, and a caller cancelled during it leaves the connection to
        a reset that starts over in the background, rather than discarding
        it.  A reset run in the background only logs, as always.
        """
        if type(conn) is not self._lease_class or conn._pool is not self:
            self._check_lease(conn)  # raises
        raw = end_lease(conn)
        entry = conn._entry
        undo = conn._undo
        if status is None:
            status = self._status(raw)
        if status == CLEAN and undo is None and self._clean_release:
            core = self._core
            core.checkin(entry, monotonic())
            if core.pending or core.closing:
                self._after_checkin()
            return None
        return self._return_rest(entry, raw, status, undo, timeout, peer)

    # Integrations that keep their own record of each checkout (SQLAlchemy's
    # pool) borrow entries rather than leases: no lease is made or ended, and
    # the release skips the lease's checks (measured: a third of a checkout
    # and checkin, which SQLAlchemy's own pool does in 0.5 us).

    def _lend(self) -> Any:
        """``acquire()`` for an integration: the entry, ``IN_USE``, when a
        ready idle connection is at hand (no await); else the awaitable of
        the rest of the acquire, which gives the entry.  It goes back
        through ``_take_back``.

        Raises:
            PoolError: the caller runs on another event loop than the pool.
        """
        core = self._core
        entry = None
        if not self._on_loop():
            self._check_loop()  # raises, unless the pool is not open yet
        elif not core.waiters:
            entry = core.checkout(monotonic())
            if (
                entry is not None
                and entry.state is IN_USE
                and not core.pending
                and not self._is_closed(entry.conn)
            ):
                return entry
        return self._lend_slow(entry)

    async def _lend_slow(self, entry: Entry | None) -> Entry:
        core = self._core
        lease = await self._acquire_slow(
            entry, self._lend_timeout(entry is None and core.size < core.config.max_size)
        )
        end_lease(lease)
        return lease._entry  # type: ignore[no-any-return]

    def _take_back(self, entry: Entry) -> Awaitable[None] | None:
        """``release()`` of an entry from ``_lend``; returns the reset to
        await, if the caller must."""
        raw = entry.conn
        status = self._status(raw)
        if status == CLEAN and self._clean_release:
            core = self._core
            core.checkin(entry, monotonic())
            if core.pending or core.closing:
                self._after_checkin()
            return None
        return self._return_rest(entry, raw, status, None)

    def _return_rest(
        self, entry: Entry, raw: Any, status: int, undo: list[Any] | None,
        timeout: float | None = None, peer: bool = False,
    ) -> Awaitable[None] | None:
        """``_return`` past its common case, the lease ended."""
        if status == BROKEN or entry.state is not IN_USE or self._loop is None:
            self._discard(entry, lost=status == BROKEN)
            return None
        core = self._core
        if not core.keeps(entry, monotonic()):
            # It would be closed after its reset: close it now, unreset.
            core.discard(entry, monotonic(), lost=False)
            self._after_checkin()
            return None
        core.begin_reset(entry)
        rest: Awaitable[Any] | None = None
        if status == CLEAN and undo is None and self._reset_mode is CUSTOM:
            # Nothing to roll back or undo: the hook alone.  Its first step
            # runs here, so a hook that ends without waiting (asyncpg's way to
            # turn the reset off is a no-op coroutine) costs neither a task
            # nor a frame (measured: a task per release cost a third of the
            # cycle); one that waits is finished as a reset, from that wait on.
            try:
                rest = _start_hook(
                    self._reset_hook,  # type: ignore[arg-type]
                    raw,
                    None if self._watched else self._reset_timeout,
                )
            except BaseException as exc:  # reported where any reset's error is
                rest = _raising(exc)
            if rest is None:
                if self._status(raw) != CLEAN:
                    self._discard(entry, lost=self._is_closed(raw))
                    return None
                core.checkin(entry, monotonic())
                if core.pending or core.closing:
                    self._after_checkin()
                return None
        if not self._resets_behind_caller():
            return self._reset_later(entry, raw, status, undo, timeout, peer, rest)
        reset: Coroutine[Any, Any, None] = self._reset_later(
            entry, raw, status, undo, timeout, rest=rest
        )
        task = self._loop.create_task(reset)
        self._resets_behind += 1
        task.add_done_callback(self._reset_behind_done)
        self._track(task)
        return None

    def _check_in_clean(self, conn: Any, raw: Any) -> bool:
        """``_return``'s common case: a clean connection, with no reset to
        run, goes straight back.  ``False``: nothing was done; give the lease
        back with ``_return``.

        ``raw`` is the live lease's driver connection (not ``RELEASED``).
        """
        if not self._clean_release or conn._undo is not None or self._quick_status(raw) != CLEAN:
            return False
        set_con(conn, RELEASED)
        made = conn._made
        if made is not None:  # what lease.end() does too
            conn._void(raw, made)
        core = self._core
        core.checkin(conn._entry, monotonic())
        if core.pending or core.closing:
            self._after_checkin()
        return True

    def _resets_behind_caller(self) -> bool:
        """Whether a release resets its connection in a task of its own, and
        its caller goes on with an idle connection: while one sits idle and
        few callers use the pool (see ``_resets_behind``)."""
        core = self._core
        idle = core.idle
        return bool(idle) and (
            core.size - core.connecting - len(idle) - self._resets_behind <= _FEW_USERS
        )

    def _reset_behind_done(self, task: asyncio.Task[None]) -> None:
        self._resets_behind -= 1

    # reset="full" under contention: a context's __aexit__ (and the asyncpg
    # façade's) runs the reset itself, between these calls, rather than
    # through _return and a _reset_later coroutine (measured: 5 % fewer
    # instructions per cycle at 100 tasks on 10 connections):
    #
    #     if pool._full_inline and (mine := pool._reset_in_line(conn, raw, status)):
    #         try:
    #             await pool._adapter.full_reset(raw, None)
    #         except BaseException as exc:
    #             if pool._reset_failed(conn._entry, raw, mine, exc):
    #                 raise
    #             return
    #         pool._reset_done(conn._entry, mine)

    def _reset_in_line(self, conn: Any, raw: Any, status: int) -> float:
        """End the lease ``conn`` and begin its reset, if its caller is to
        run it in line; returns the reset watch's token (the reset's
        deadline), or ``0.0``, having done nothing: release it with
        ``_return``, which deals with every other case.

        ``raw`` is the lease's driver connection and ``status`` its status,
        read just now.
        """
        if status >= BUSY or conn._undo is not None:  # BUSY, BROKEN: _return settles or drops
            return 0.0
        core = self._core
        # (Asked only with connections idle: under contention, no call.)
        if core.idle and self._resets_behind_caller():
            return 0.0
        entry = conn._entry
        now = monotonic()
        if entry.state is not IN_USE or not core.keeps(entry, now):
            return 0.0
        core.begin_reset(entry)
        set_con(conn, RELEASED)
        made = conn._made
        if made is not None:  # what lease.end() does too
            conn._void(raw, made)
        entry.reset_by = mine = now + self._reset_timeout
        if self._reset_watch is None:
            self._arm_reset_watch(mine)
        return mine

    def _reset_done(self, entry: Entry, token: float) -> None:
        """The reset begun by ``_reset_in_line`` ended without error: check in.

        A reset that ends without error leaves the connection out of any
        transaction; one that broke meanwhile is caught at its next checkout.
        """
        if entry.reset_by is not token:  # it ended just as the watch cut it off
            self._cut_off.discard(entry)
            self._discard(entry, lost=False)
            return
        entry.reset_by = None
        core = self._core
        core.checkin(entry, monotonic())
        if core.pending or core.closing:
            self._after_checkin()

    def _reset_failed(
        self, entry: Entry, raw: Any, token: float, exc: BaseException, peer: bool = False
    ) -> bool:
        """The reset begun by ``_reset_in_line`` raised ``exc``; ``True``:
        the caller raises it on.

        As a reset by ``_reset_later``: the connection is discarded and an
        error is logged; a cancellation goes on.  With ``peer`` (the asyncpg
        façade, whose release raises what made the reset fail) the error is
        raised instead of logged (a ``TimeoutError`` when the reset watch
        cut the reset off), and a cancelled caller leaves the connection to
        a reset that starts afresh in the background.
        """
        cut = self._unwatch_reset(entry, token)
        if not isinstance(exc, Exception):  # cancelled, for one
            if peer and self._loop is not None and entry.state is RESETTING:
                again = self._reset_later(entry, raw, self._status(raw), None)
                self._track(self._loop.create_task(again))
            else:
                self._discard(entry, lost=False)
            return True
        self._discard(entry, lost=self._is_closed(raw) and not cut)
        if not peer:
            self._log_reset_failed(entry, TimeoutError() if cut else exc)
            return False
        if cut:
            raise TimeoutError(
                f"{self.name}: the reset of connection #{entry.id} took longer than "
                f"reset_timeout={self._reset_timeout:g}s; the connection was discarded"
            ) from exc
        return True

    async def _reset_later(
        self, entry: Entry, raw: Any, status: int, undo: list[Any] | None,
        timeout: float | None = None, peer: bool = False, rest: Awaitable[Any] | None = None,
    ) -> None:
        """Reset ``entry``'s connection, then check it in (or discard it).

        ``rest``: what is left of a reset ``_return`` began (a reset hook past
        its first step), to await instead of a reset of its own.
        """
        error: Exception | None = None
        cut = False
        watched = self._watched
        if watched:
            # Bounded by the reset watch (see _unwatch_reset), not by a timer
            # of its own.
            entry.reset_by = mine = monotonic() + self._reset_timeout
            if self._reset_watch is None:
                self._arm_reset_watch(mine)
        try:
            if rest is not None:
                await (rest if timeout is None else _bounded(rest, timeout))
                ok = True
            elif timeout is not None:
                ok = await _bounded(self._reset(raw, status, undo, watched), timeout)
            elif self._reset_mode is FULL and undo is None and status != BUSY:
                # _reset's common case, inline: one frame less on every release.
                await self._adapter.full_reset(raw, None if watched else self._reset_timeout)
                ok = True
            else:
                ok = await self._reset(raw, status, undo, watched)
        except asyncio.CancelledError:
            if watched:
                self._unwatch_reset(entry, mine)
            if peer and self._loop is not None and entry.state is RESETTING:
                # The caller leaves; the connection does not: reset it afresh
                # (a query the cancellation cut short is settled first).
                again = self._reset_later(entry, raw, self._status(raw), undo)
                self._track(self._loop.create_task(again))
            else:
                self._discard(entry, lost=False)
            raise
        except Exception as exc:
            error = exc
            if watched and self._unwatch_reset(entry, mine):
                # The watch cut it off: say so, as a driver's timeout would.
                cut = True
                error = TimeoutError()
            if not peer:
                self._log_reset_failed(entry, error)
            ok = False
        else:
            if watched:
                if entry.reset_by is mine:
                    entry.reset_by = None
                else:  # done just as the watch cut it off: its connection is gone
                    self._cut_off.discard(entry)
                    cut = True
                    ok = False
        if not ok or self._status(raw) != CLEAN:
            closed = self._is_closed(raw) and not cut
            self._discard(entry, lost=closed)
            if peer:
                if error is not None:
                    raise error
                if not ok and not closed:  # only a busy connection that would not settle
                    raise TimeoutError(
                        f"{self.name}: the query cancelled on connection #{entry.id} did not "
                        "end in time for its release; the connection was discarded"
                    )
            return
        core = self._core
        core.checkin(entry, monotonic())
        if core.pending or core.closing:  # _after_checkin, inline: once per reset
            self._after_checkin()

    async def _reset(
        self, raw: Any, status: int, undo: list[Any] | None, watched: bool = False
    ) -> bool:
        """Bring a released connection back to a clean state; ``False``: give up.

        ``watched``: the reset watch bounds the whole reset, so the steps
        get no timeout of their own (settling a cancelled query keeps its own).
        """
        adapter = self._adapter
        mode = self._reset_mode
        seconds = None if watched else self._reset_timeout
        if status == BUSY and not await adapter.settle(raw, self._reset_timeout):
            return False
        if mode is FULL or (undo is not None and FULL_RESET in undo):
            await adapter.full_reset(raw, seconds)
        elif mode is not NO_RESET and self._status(raw) == IN_TRANSACTION:
            await adapter.rollback(raw, seconds)
        if undo:  # after the rollback: psycopg takes no autocommit change inside one
            await _bounded(adapter.undo(raw, undo), seconds)
        if mode is CUSTOM:
            rest = _start_hook(self._reset_hook, raw, seconds)  # type: ignore[arg-type]
            if rest is not None:
                await rest
        return True

    # The reset watch bounds every reset in flight by ``reset_timeout`` with
    # one timer, for adapters whose terminate() interrupts an operation in
    # flight: a timer armed and cancelled in every reset cost a tenth of a
    # full-reset release (measured with asyncpg).  Each entry being reset
    # holds its deadline in ``reset_by``; the timer is armed for the earliest
    # deadline when none is armed, and when it fires it terminates the
    # connections whose reset overran, noting them in ``_cut_off`` so that
    # their reset reports a timeout, and re-arms for the next deadline.  A
    # watch that finds nothing left stops.

    def _unwatch_reset(self, entry: Entry, token: float) -> bool:
        """Take ``entry``'s reset off the watch; ``True``: the watch cut it off."""
        if entry.reset_by is token:
            entry.reset_by = None
            return False
        if entry in self._cut_off:
            self._cut_off.discard(entry)
            return True
        return False

    def _arm_reset_watch(self, when: float) -> None:
        loop = self._loop
        assert loop is not None
        # Holds the pool weakly: a forgotten pool is not kept until it fires.
        self._reset_watch = loop.call_at(
            loop.time() + (when - monotonic()), _reset_watch_fired, self._myself
        )

    def _on_reset_watch(self) -> None:
        self._reset_watch = None
        now = monotonic() + 0.0005  # timers may fire a hair early
        following = _INF
        for entry in list(self._core.entries):
            deadline = entry.reset_by
            if deadline is None:
                continue
            if deadline <= now:
                entry.reset_by = None
                self._cut_off.add(entry)
                self._terminate_quietly(entry.conn)
            elif deadline < following:
                following = deadline
        if following < _INF:
            self._arm_reset_watch(following)

    def _discard(self, entry: Entry, *, lost: bool) -> None:
        if entry.conn is not None and entry.state not in (CLOSING, CLOSED):
            self._adapter.terminate(entry.conn)
        self._core.discard(entry, monotonic(), lost=lost)
        self._after_checkin()

    def _after_checkin(self) -> None:
        core = self._core
        if core.pending:
            self._drain()
        if core.closing and self._drained is not None and core.drained:
            self._drained.set()

    def connection(self, *, timeout: float | None = DEFAULT) -> _Connection:
        """``async with pool.connection() as conn:`` leases a connection for the block.

        With psycopg, the block commits on success and rolls back on error
        (unless the connection is in autocommit), as psycopg_pool does.
        """
        # ConnectionContextBase.made_for, inline: this runs once per block.
        if timeout is not DEFAULT:
            self._check_timeout(timeout)
        ctx = _blank(_Connection)
        ctx._pool = self
        ctx._timeout = timeout
        ctx._conn = None
        return ctx

    # ------------------------------------------------------------------
    # background work

    def _drain(self) -> None:
        core = self._core
        work, core.pending = core.pending, []
        loop = self._loop
        for entry in work:
            state = entry.state
            if state is CONNECTING:
                if loop is None:  # pragma: no cover - core only asks once open
                    core.connect_aborted(entry)
                    continue
                task = loop.create_task(self._connect(entry))
                self._connect_tasks[entry] = task
                self._track(task)
            elif state is CLOSING:
                if (
                    loop is None
                    or entry.conn is None
                    or self._close_inline
                    or self._is_closed(entry.conn)
                ):
                    self._hard_close(entry)
                else:
                    self._track(loop.create_task(self._close(entry)))
            elif state is PINGING and loop is not None:
                self._track(loop.create_task(self._keepalive(entry)))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, entry: Entry) -> None:
        core = self._core
        adapter = self._adapter
        hosts = self._hosts
        try:
            while True:
                if hosts is not None:
                    # Several hosts: the core picks this attempt's host, or
                    # says how long until one may be tried.
                    wait = core.aim(entry, monotonic())
                    if wait:
                        await asyncio.sleep(wait)
                        if not core.retry_due(entry, monotonic()):
                            return
                        continue
                try:
                    conn, standby = await self._open_in_time(entry)
                except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # a hook's odd BaseException fails this connect only
                    now = monotonic()
                    exc, configured, permanent = self._failed_connect(exc)
                    again = core.rejection is not None
                    delay = core.connect_failed(
                        entry, exc, now, permanent=permanent, configured=configured
                    )
                    self._log_connect_failed(exc, delay, permanent, again)
                    if core.reconnect_failed_due(now) and self._reconnect_failed is not None:
                        self._notify_reconnect_failed()
                    if delay is None:
                        return
                    await asyncio.sleep(delay)
                    if not core.retry_due(entry, monotonic()):
                        return
                    continue
                if self._closed:
                    adapter.terminate(conn)
                    core.connect_aborted(entry)
                    return
                now = monotonic()
                failing_since = core.failing_since
                if standby is None:
                    core.connect_succeeded(entry, conn, now)
                elif not core.connect_landed(entry, conn, standby, now):
                    adapter.terminate(conn)  # a role this pool does not connect to
                    if core.pending:  # what a change of role retired
                        self._drain()
                    continue
                if failing_since is not None:
                    self._log_recovered(now - failing_since)
                self._update_filled()
                if core.pending:
                    self._drain()
                return
        finally:
            self._connect_tasks.pop(entry, None)
            core.connect_aborted(entry)  # no-op unless we were cancelled mid-way

    async def _open_in_time(self, entry: Entry) -> tuple[Any, bool | None]:
        """``_open_one`` bounded by ``connect_timeout``, failing with words that say so."""
        seconds = self._connect_timeout
        start = monotonic()
        try:
            return await _bounded(self._open_one(entry), seconds)
        except (TimeoutError, asyncio.TimeoutError):
            if monotonic() - start < seconds - 0.001:
                raise  # the driver's own timeout, in its own words
            raise self._connect_timed_out() from None

    async def _open_one(self, entry: Entry) -> tuple[Any, bool | None]:
        """Connect and configure; with several hosts, also learn the server's role.

        Returns the connection and whether its server is a standby (``None``
        with one host, where the pool does not ask).
        """
        adapter = self._adapter
        conn = await adapter.connect(self._dsn, self._kwargs_for(entry))
        standby = None
        try:
            if self._hosts is not None:
                standby = await adapter.in_recovery(conn)
            if self._configure is not None:
                try:
                    await _call_hook(self._configure, conn)
                    self._check_configured(conn)
                except Exception as exc:  # not a cancellation: the connect timing out
                    raise ConfigureFailed(exc) from None
        except BaseException:
            adapter.terminate(conn)
            raise
        return conn, standby

    def _notify_reconnect_failed(self) -> None:
        """Call ``reconnect_failed`` in a task of its own: however long the
        callback takes, the connect loop goes on retrying meanwhile."""
        loop = self._loop
        assert loop is not None
        task = loop.create_task(
            self._run_reconnect_failed(), name=f"{self.name} reconnect_failed"
        )
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)

    async def _run_reconnect_failed(self) -> None:
        assert self._reconnect_failed is not None
        try:
            await _call_hook(self._reconnect_failed, self)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            self._log.exception("%s: reconnect_failed callback raised", self.name)

    def _update_filled(self) -> None:
        core = self._core
        if self._filled is not None and core.size - core.connecting >= core.fill_target:
            self._filled.set()

    async def _close(self, entry: Entry) -> None:
        graceful = False
        try:
            await self._adapter.close(entry.conn, self._reset_timeout)
            graceful = True
        except Exception:
            self._log.debug("%s: graceful close of #%d failed", self.name, entry.id, exc_info=True)
        finally:
            if not graceful:
                self._adapter.terminate(entry.conn)
            self._core.closed(entry)

    async def _keepalive(self, entry: Entry) -> None:
        ok = True
        standby = None
        try:
            await self._ping(entry.conn, self._reset_timeout)
            if self._hosts is not None:  # a promotion shows here (on PostgreSQL 14+, for free)
                standby = await self._adapter.in_recovery(entry.conn)
        except asyncio.CancelledError:
            self._adapter.terminate(entry.conn)
            self._core.discard(entry, monotonic(), lost=False)
            raise
        except Exception:
            ok = False
            self._adapter.terminate(entry.conn)
        self._core.ping_done(entry, ok, monotonic(), standby=standby)
        self._after_checkin()

    def _housekeeping_tick(self) -> None:
        if self._watchdog is not None and not self._core.waiters and not self._deadlines:
            # Nobody waits: the watchdog is not needed until someone does,
            # and an armed timer costs every turn of the loop (see _ticker).
            self._watchdog.cancel()
            self._watchdog = None
            self._watchdog_at = _INF
        self._core.housekeeping(monotonic())
        if self._core.pending:
            self._drain()
        if self._config.leak_timeout is not None:
            self._report_leaks(self._leak_infos(monotonic()))

    def _leak_callback_result(self, result: Any) -> None:
        if inspect.isawaitable(result) and self._loop is not None:
            task = self._loop.create_task(self._await_leak_callback(result))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def _await_leak_callback(self, result: Awaitable[Any]) -> None:
        try:
            await result
        except Exception:
            self._log.exception("%s: on_leak callback raised", self.name)

    def _budget_poke(self, word: str) -> None:
        loop = self._loop
        if loop is None or self._closed:
            raise PoolClosed(f"{self.name} is not serving")
        loop.call_soon_threadsafe(self._on_budget, word)

    def _on_budget(self, word: str) -> None:
        self._budget_event(word, monotonic())
        if self._core.pending:
            self._drain()

    # ------------------------------------------------------------------
    # administration

    async def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change ``min_size``/``max_size``; the pool grows or shrinks to fit."""
        lo, hi = self._check_resize(min_size, max_size)
        self._core.resize(lo, hi, monotonic())
        self._drain()

    async def expire(self) -> None:
        """Replace every connection: idle ones now, leased ones when they return."""
        self._core.expire(monotonic())
        self._drain()

    async def check(self) -> None:
        """Ping every idle connection now; replace the ones that fail."""
        entries = self._core.check_idle(monotonic())
        if entries:
            await asyncio.gather(*(self._keepalive(e) for e in entries))

    # ------------------------------------------------------------------
    # LISTEN/NOTIFY (issue 15): a connection of its own, see pgmarina.listener

    def listener(self) -> AsyncListener:
        """The pool's LISTEN/NOTIFY listener, made on first use.

        It holds one connection outside the pool's slots (``stats().dedicated``),
        reconnects with backoff, and closes with the pool; see
        :class:`~pgmarina.listener.AsyncListener`.

        Raises:
            PoolNotOpen, PoolClosed: the pool is not open.
        """
        if self._listener is None:
            if self._closed:
                raise PoolClosed(f"{self.name} is closed")
            if not self._opened:
                raise PoolNotOpen(f"{self.name} is not open")
            self._listener = listener = AsyncListener(self)
            # A pool dropped without close() takes its listener along.
            weakref.finalize(self, listener._forgotten)
        return self._listener

    async def listen(
        self, channel: str, callback: Callable[[Notification], Any], *,
        on_gap: Callable[[Gap], Any] | None = None, timeout: float | None = None,
    ) -> Subscription:
        """Call ``callback(note)`` for each notification on ``channel``, and
        ``on_gap(gap)`` when some may have been missed; see
        :meth:`~pgmarina.listener.AsyncListener.listen`."""
        return await self.listener().listen(channel, callback, on_gap=on_gap, timeout=timeout)

    def notifications(self, channel: str) -> AsyncNotifications:
        """``async for note in pool.notifications(channel)``; see
        :class:`~pgmarina.listener.AsyncNotifications`."""
        return self.listener().notifications(channel)

    # ------------------------------------------------------------------
    # asyncpg shortcuts

    async def _shortcut(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._adapter.name != "asyncpg":
            raise TypeError(
                f"pool.{method}() is only for asyncpg; use 'async with pool.connection()'"
            )
        timeout = kwargs.get("timeout")
        conn = await self.acquire(timeout=timeout if timeout is not None else DEFAULT)
        try:
            return await getattr(conn._con, method)(*args, **kwargs)
        finally:
            await self.release(conn)

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        """Run ``query`` on a leased connection (asyncpg's ``Connection.execute``)."""
        return await self._shortcut("execute", (query, *args), {"timeout": timeout})

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> Any:
        """asyncpg's ``Connection.executemany`` on a leased connection."""
        return await self._shortcut("executemany", (command, args), {"timeout": timeout})

    async def fetch(self, query: str, *args: Any, timeout: float | None = None,
                    **kwargs: Any) -> Any:
        """asyncpg's ``Connection.fetch`` on a leased connection."""
        return await self._shortcut("fetch", (query, *args), {"timeout": timeout, **kwargs})

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None,
                       **kwargs: Any) -> Any:
        """asyncpg's ``Connection.fetchrow`` on a leased connection."""
        return await self._shortcut("fetchrow", (query, *args), {"timeout": timeout, **kwargs})

    async def fetchval(self, query: str, *args: Any, column: int = 0,
                       timeout: float | None = None) -> Any:
        """asyncpg's ``Connection.fetchval`` on a leased connection."""
        return await self._shortcut(
            "fetchval", (query, *args), {"column": column, "timeout": timeout}
        )


class _AsyncContext(ConnectionContextBase):
    __slots__ = ()

    # Past the fast path, both contexts' __aenter__ await the pool's
    # _acquire_slow themselves, with ENTERING in _conn meanwhile so that a
    # second entry is refused too: a helper coroutine around that await was
    # a frame made, and resumed, for every acquire that waits.


class _Connection(_AsyncContext):
    """The async context manager behind ``pool.connection()``."""

    __slots__ = ()

    async def __aenter__(self) -> Any:
        if self._conn is not None:
            raise self._in_use("connection")
        # AsyncPool._take, inline: this runs once per ``async with``.
        pool = self._pool
        core = pool._core
        # AsyncPool._on_loop, inline.
        mine = pool._asyncio_loop
        if (
            mine._thread_id == _thread_ident()
            if mine is not None
            else _running_loop() is pool._loop
        ):
            # While anyone waits, checkout() says "queue" (strict FIFO, no
            # barging here): asked only when nobody does.
            entry = None if core.waiters else core.checkout(monotonic())
        else:
            pool._check_loop()  # raises, unless the pool is not open yet
            entry = None
        if (
            entry is not None
            and entry.state is IN_USE
            and not core.pending
            and not pool._is_closed(entry.conn)
        ):
            self._conn = conn = pool._new_lease(entry.conn, entry, pool)
            return conn
        self._conn = ENTERING
        if entry is None and self._timeout is DEFAULT:
            # AsyncPool._acquire_slow's common case, inline: a caller with the
            # pool's own timeout queues, and is handed a connection.
            start = monotonic()
            seconds = pool._config.timeout
            try:
                fut = pool._queue_up(
                    start, None if seconds is None else start + seconds, start, False
                )
            except BaseException:
                self._conn = None
                raise
            try:
                entry = await fut
            except BaseException:
                self._conn = None
                pool._waiter_left(fut)
                raise
            self._conn = conn = pool._new_lease(entry.conn, entry, pool)
            return conn
        try:
            conn = await pool._acquire_slow(entry, self._timeout)
        except BaseException:
            self._conn = None
            raise
        self._conn = conn
        return conn

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        conn, self._conn = self._conn, None
        pool = self._pool
        raw = conn._con
        if raw is RELEASED:  # released inside the block
            pool._return(conn)  # raises ConnectionReleasedError
        if pool._check_in_clean(conn, raw):  # live: checked above, and nothing awaited since
            return
        status = pool._status(raw)
        if pool._full_inline and (mine := pool._reset_in_line(conn, raw, status)):
            try:  # _return and _reset_later's common case, inline: once per release
                await pool._adapter.full_reset(raw, None)
            except BaseException as exc:
                if pool._reset_failed(conn._entry, raw, mine, exc):
                    raise
                return
            pool._reset_done(conn._entry, mine)
            return
        if status == IN_TRANSACTION and pool._transactional:
            try:
                if exc_type is None:
                    await pool._adapter.end_block(raw, False)
                else:  # bounded like a reset: a partition must not hang the block's end
                    await pool._adapter.rollback(raw, pool._reset_timeout)
            except Exception as end_exc:
                await pool.release(conn)
                if exc_type is None:
                    raise
                pool._log_reset_failed(conn._entry, end_exc)
                return  # the block's own error goes on
            except BaseException:
                await pool.release(conn)
                raise
            status = pool._status(raw)
        reset = pool._return(conn, status)
        if reset is not None:
            await reset


class _RoutedConnection(_Connection):
    """``pool.writer.connection()``: ``pool.connection()`` for a caller that asked for a role."""

    __slots__ = ("_want",)

    _want: str

    async def __aenter__(self) -> Any:
        if self._conn is not None:
            raise self._in_use("connection")
        self._conn = ENTERING
        try:
            conn = await self._pool._acquire_for(self._want, self._timeout)
        except BaseException:
            self._conn = None
            raise
        self._conn = conn
        return conn


class _Acquire(_AsyncContext):
    """What ``pool.acquire()`` returns: an awaitable and an async context manager.

    Awaiting it runs the acquire and returns the lease; ``async with`` also
    releases the lease when the block ends.  Either way the pool is asked
    only then, so an ``_Acquire`` that is dropped unused took nothing and
    leaves no "never awaited" warning behind.

    It also speaks the coroutine protocol (``send``, ``throw``, ``close``),
    so code written when ``acquire`` was a coroutine function, such as
    ``asyncio.create_task(pool.acquire())``, keeps working.
    """

    # _run: the acquire in progress when driven through send/throw (unset
    # until then).  _conn: the block's lease while in ``async with``.
    __slots__ = ("_run",)

    _run: Generator[Any, None, Any]

    def __await__(self) -> Generator[Any, None, Any]:
        pool = self._pool
        got = pool._take()
        if type(got) is pool._lease_class:
            return got
        return (yield from pool._acquire_slow(got, self._timeout).__await__())

    async def __aenter__(self) -> Any:
        if self._conn is not None:
            raise self._in_use("acquire")
        pool = self._pool
        got = pool._take()
        if type(got) is pool._lease_class:
            self._conn = got
            return got
        self._conn = ENTERING
        try:
            conn = await pool._acquire_slow(got, self._timeout)
        except BaseException:
            self._conn = None
            raise
        self._conn = conn
        return conn

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        conn, self._conn = self._conn, None
        reset = self._pool._return(conn)  # a plain release, as in asyncpg
        if reset is not None:
            await reset

    # -- the coroutine protocol ------------------------------------------

    @property
    def __name__(self) -> str:  # what a Task's repr calls its coroutine
        return "AsyncPool.acquire"

    def _steps(self) -> Generator[Any, None, Any]:
        try:
            return self._run
        except AttributeError:
            run = self._run = self.__await__()
            return run

    def send(self, value: Any) -> Any:
        return self._steps().send(value)

    def throw(self, *args: Any) -> Any:
        return self._steps().throw(*args)

    def close(self) -> None:
        try:
            run = self._run
        except AttributeError:
            return
        run.close()




def _watchdog_fired(ref: weakref.ref[AsyncPool]) -> None:
    pool = ref()
    if pool is not None:
        pool._on_watchdog()


def _reset_watch_fired(ref: weakref.ref[AsyncPool]) -> None:
    pool = ref()
    if pool is not None:
        pool._on_reset_watch()


