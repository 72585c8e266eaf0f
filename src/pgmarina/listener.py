"""LISTEN/NOTIFY on a connection of the pool's own that comes back after a loss.

A pool's connections are lent out and reset, so none of them can keep a
``LISTEN``: a listener needs a connection that nobody borrows.  Each pool
makes one on demand (``pool.listen(...)`` or ``pool.notifications(...)``)
and keeps it outside its slots: it is not counted in ``size`` or
``max_size``, and ``stats().dedicated`` shows it.

One supervisor (a task for :class:`AsyncListener`, a thread for
:class:`Listener`) owns that connection and does all of its IO:

* it connects, with the pool's DSN and connect keywords, retrying with the
  pool's exponential backoff (with jitter) while the server is away;
* it brings the connection's ``LISTEN`` set in line with the channels that
  have subscribers, whenever a subscriber comes or goes, and after every
  reconnect (the new session listens to nothing);
* it waits for notifications and hands each one to the subscribers of its
  channel; after ``keepalive`` seconds (the pool's setting, 60 by default)
  of silence it pings, so that a connection lost without a word is noticed.

PostgreSQL keeps no notification for a session that is not listening: what
was sent while the listener was reconnecting is gone.  The listener cannot
get it back, but it says so.  Once ``LISTEN`` is active again on the new
connection, every subscriber receives a :class:`Gap` (its ``on_gap``
callback, or the next item of its iterator), so that it can re-read whatever
state the notifications were about.

Subscribers never run on the supervisor's critical path for long: callbacks
are called as notifications arrive (async callbacks in tasks of their own),
and a callback's exception is logged, not raised into the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import random
import select
import socket
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from time import monotonic
from typing import Any

from ._core.config import seconds
from ._redact import describe_error
from .adapters.base import bounded
from .errors import PoolClosed, PoolTimeout

__all__ = ["AsyncListener", "AsyncNotifications", "Gap", "Listener", "Notification",
           "Notifications", "Subscription"]


@dataclass(frozen=True, slots=True)
class Notification:
    """One ``NOTIFY`` as it arrived.

    Attributes:
        channel: The channel it was sent on.
        payload: Its payload (``""`` when none was given).
        pid: The process id of the backend that sent it.
    """

    channel: str
    payload: str
    pid: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Notifications on ``channel`` may have been missed.

    The listener's connection was lost at ``lost_at`` and ``LISTEN`` was
    active again at ``resumed_at`` (both ``time.monotonic()`` seconds):
    whatever was sent in between never reached this process.

    Attributes:
        channel: The subscriber's channel.
        lost_at: When the loss was noticed.
        resumed_at: When the channel was listened to again.
        error: What broke the connection, one line, with no secret in it.
    """

    channel: str
    lost_at: float
    resumed_at: float
    error: str

    @property
    def seconds(self) -> float:
        """How long the channel went unheard."""
        return self.resumed_at - self.lost_at


#: PostgreSQL cuts identifiers longer than this (NAMEDATALEN - 1 bytes), and
#: notifications would then arrive under a name no subscriber asked for.
_MAX_CHANNEL_BYTES = 63


def _channel(channel: Any) -> str:
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a str, not {type(channel).__name__}")
    if not channel or "\x00" in channel:
        raise ValueError(f"channel must be a non-empty name without NUL, got {channel!r}")
    if len(channel.encode()) > _MAX_CHANNEL_BYTES:
        raise ValueError(
            f"channel must be at most {_MAX_CHANNEL_BYTES} bytes (PostgreSQL would cut it "
            f"short), got {len(channel.encode())}: {channel[:20]!r}..."
        )
    return channel


def _listen_timeout(value: Any, default: float | None) -> float | None:
    """``listen()``'s ``timeout``: ``None`` is the pool's ``timeout``."""
    if value is None:
        return default
    return seconds("timeout", value, nullable=True, waited=True)


class Subscription:
    """What ``listen()`` returns: one subscriber on one channel.

    ``unlisten()`` (``await``-ed on an :class:`AsyncListener`) ends it; the
    listener ``UNLISTEN``-s the channel once its last subscriber is gone.
    """

    __slots__ = ("_listener", "active", "callback", "channel", "on_gap")

    def __init__(
        self, listener: Any, channel: str, callback: Callable[..., Any] | None,
        on_gap: Callable[..., Any] | None,
    ) -> None:
        self._listener = listener
        self.channel = channel
        self.callback = callback
        self.on_gap = on_gap
        self.active = True

    def __repr__(self) -> str:
        state = "active" if self.active else "ended"
        return f"<Subscription {self.channel!r} {state}>"

    def unlisten(self) -> Any:
        """Stop receiving; returns an awaitable on an :class:`AsyncListener`."""
        return self._listener._unsubscribe(self)

    # Called by the supervisor (the loop's thread, or the listener thread).
    def _notify(self, note: Notification) -> Any:
        assert self.callback is not None
        return self.callback(note)

    def _gap(self, gap: Gap) -> Any:
        return None if self.on_gap is None else self.on_gap(gap)


class _Queued(Subscription):
    """A subscriber whose items go to a queue that an iterator reads."""

    __slots__ = ("put",)

    def __init__(self, listener: Any, channel: str, put: Callable[[Any], None]) -> None:
        super().__init__(listener, channel, None, None)
        self.put = put

    def _notify(self, note: Notification) -> None:
        self.put(note)

    def _gap(self, gap: Gap) -> None:
        self.put(gap)


#: Ends an iterator: its listener closed.
_END = object()


class _ListenerBase:
    """Subscribers, delivery and the supervisor's bookkeeping; no IO.

    ``_subs`` is changed by callers and read by the supervisor; in the thread
    shell every access holds ``_lock``.
    """

    def __init__(self, pool: Any) -> None:
        self._pool_ref = weakref.ref(pool)
        self.name = f"{pool.name} listener"
        self._adapter = pool._adapter
        self._dsn = pool._dsn
        self._kwargs = pool._connect_kwargs
        self._connect_timeout = pool._connect_timeout
        self._io_timeout = pool._reset_timeout
        self._log = pool._log
        config = pool._config
        self._backoff = (config.backoff_initial, config.backoff_max)
        self._interval = config.keepalive or 60.0
        #: How long ``listen()`` waits for ``LISTEN`` by default.
        self._timeout = config.timeout
        self._subs: dict[str, list[Subscription]] = {}
        #: Channels ``LISTEN``-ed on the current connection.
        self._active: set[str] = set()
        self._conn: Any = None
        #: The registry budget the connection's permit came from, while held.
        self._permits: Any = None
        self._closed = False
        #: Since when the channels went unheard, and why: set when a
        #: connection is lost, cleared when the gap is reported.
        self._lost_at: float | None = None
        self._lost_error = ""
        #: The last connect failure, while connects fail: what a ``listen()``
        #: that times out reports.
        self._trouble = ""
        #: Connections lost (and replaced) so far.
        self.reconnects = 0

    @property
    def closed(self) -> bool:
        """Whether the listener is closed (it closes with its pool)."""
        return self._closed

    @property
    def connected(self) -> bool:
        """Whether the listener holds a live connection now."""
        return self._conn is not None

    @property
    def channels(self) -> frozenset[str]:
        """The channels with at least one subscriber."""
        return frozenset(self._subs)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self._conn is not None
                                               else "not connected")
        return f"<{type(self).__name__} {self.name!r} {state} | {len(self._subs)} channels>"

    def _count(self, delta: int) -> None:
        pool = self._pool_ref()
        if pool is not None:
            pool._core.dedicated += delta

    def _delay(self, attempt: int) -> float:
        first, cap = self._backoff
        return float(min(cap, first * 2**attempt) * (0.5 + random.random() / 2))

    def _deliver(self, channel: str, payload: str, pid: int) -> None:
        """Hand a notification to its channel's subscribers (the driver calls this)."""
        subs = self._subs.get(channel)
        if not subs:
            return
        note = Notification(channel, payload, pid)
        for sub in list(subs):
            self._call(sub, sub._notify, note)

    def _snapshot(self) -> dict[str, list[Subscription]]:
        """The subscribers by channel, copied, to call without a lock."""
        return {channel: list(subs) for channel, subs in self._subs.items()}

    def _report_gap(self, now: float) -> None:
        """Hand every subscriber a :class:`Gap` if a connection was lost since
        the last report (the supervisor calls it once ``LISTEN`` is back)."""
        snapshot = self._snapshot()
        if self._lost_at is None:
            return
        lost_at, error = self._lost_at, self._lost_error
        self._lost_at = None
        self._log.info(
            "%s: listening again on %d channel(s) after %.3gs; notifications sent "
            "meanwhile were missed", self.name, len(snapshot), now - lost_at,
        )
        for channel, subs in snapshot.items():
            gap = Gap(channel, lost_at, now, error)
            for sub in subs:
                self._call(sub, sub._gap, gap)

    def _permit(self) -> bool:
        """A permit of the pool's registry budget for the listener's connection
        (dedicated connections count against ``max_total`` too); ``True``
        when the pool is in no registry."""
        pool = self._pool_ref()
        if pool is None or pool._core.permits is None:
            return True
        permits = pool._core.permits
        self._permits = permits
        # needed=0: take a free permit only (the pool's own callers queue
        # claims); without one, have an idle connection closed somewhere,
        # wait the backoff and ask again.
        if permits.take(pool._core, 0):
            return True
        permits.make_room()
        return False

    def _unpermit(self) -> None:
        permits, self._permits = self._permits, None
        pool = self._pool_ref()
        if permits is not None and pool is not None:
            permits.release(pool._core)

    def _budget_full(self, attempt: int) -> float:
        delay = self._delay(attempt)
        self._trouble = "the registry's max_total is reached"
        self._log.log(logging.DEBUG if attempt else logging.INFO,
                      "%s: %s; retrying in %.0f ms", self.name, self._trouble, delay * 1000)
        return delay

    def _connected(self, conn: Any) -> None:
        """The supervisor holds a new connection: the trouble is over, and it
        counts among the pool's dedicated connections."""
        self._trouble = ""
        self._conn = conn
        self._count(+1)

    def _connect_failed(self, exc: BaseException, attempt: int) -> float:
        """Log a failed connect as the pools do; returns the delay before the next."""
        delay = self._delay(attempt)
        self._trouble = describe_error(exc)
        permanent = self._adapter.is_permanent(exc)
        # A rejection (wrong password, no such database) repeats every
        # backoff_max for as long as it lasts: one warning says it.
        self._log.log(
            logging.DEBUG if permanent and attempt else logging.WARNING,
            "%s: connect failed (%s); retrying in %.0f ms",
            self.name, self._trouble, delay * 1000,
        )
        return delay

    def _end_all(self) -> None:
        """Forget every subscriber, ending the iterators (caller holds the lock
        in the thread shell)."""
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.active = False
                if isinstance(sub, _Queued):
                    sub.put(_END)
        self._subs.clear()

    def _lost(self, exc: BaseException | None) -> None:
        if self._lost_at is None:
            self._lost_at = monotonic()
            self._lost_error = "connection closed" if exc is None else describe_error(exc)
        self.reconnects += 1
        # INFO, as the pool's own replaced connections: the subscribers hear
        # of it through their Gap, and a failing reconnect logs a WARNING.
        self._log.info("%s: connection lost (%s); reconnecting", self.name, self._lost_error)

    def _new_subscription(
        self, channel: str, callback: Callable[[Notification], Any],
        on_gap: Callable[[Gap], Any] | None,
    ) -> Subscription:
        """The checks and the :class:`Subscription` both ``listen()`` start with."""
        _check_callable("callback", callback)
        _check_callable("on_gap", on_gap)
        return Subscription(self, _channel(channel), callback, on_gap)

    def _forget(self, sub: Subscription) -> bool:
        """Take ``sub`` out of ``_subs``; True when its channel has no
        subscriber left (the supervisor must be woken to ``UNLISTEN`` it).
        The thread shell calls it holding ``_lock``."""
        sub.active = False
        subs = self._subs.get(sub.channel)
        if subs is not None and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.channel]
                return True
        return False

    def _not_active(self, sub: Subscription, limit: float | None) -> PoolTimeout:
        """The error of a ``listen()`` whose ``LISTEN`` was not active in time."""
        return PoolTimeout(
            f"{self.name}: LISTEN {sub.channel!r} not active after {limit:.3g}s"
            + (f" ({self._trouble})" if self._trouble else "")
        )

    def _call(self, sub: Subscription, fn: Callable[[Any], Any], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            self._log.exception("%s: subscriber of %r raised", self.name, sub.channel)

    def _plan(self) -> tuple[list[str], list[str]]:
        """The channels to ``LISTEN`` to and to ``UNLISTEN``, now."""
        wanted = set(self._subs)
        return sorted(wanted - self._active), sorted(self._active - wanted)


# ----------------------------------------------------------------------
# asyncio


class AsyncListener(_ListenerBase):
    """The LISTEN/NOTIFY listener of an :class:`~pgmarina.AsyncPool`.

    Get it with ``pool.listener()``; ``pool.listen()`` and
    ``pool.notifications()`` are shortcuts to its methods.  It connects on
    the first subscription and closes with the pool.
    """

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()  # set each time the LISTEN set is in line
        self._tasks: set[asyncio.Task[Any]] = set()

    async def listen(
        self, channel: str, callback: Callable[[Notification], Any], *,
        on_gap: Callable[[Gap], Any] | None = None, timeout: float | None = None,
    ) -> Subscription:
        """Call ``callback(note)`` for every notification on ``channel``.

        Returns once ``LISTEN`` is active, so a ``NOTIFY`` sent after that
        reaches ``callback``.

        Args:
            channel: The channel's name (quoted for you: any string works).
            callback: Called with each :class:`Notification`; may be a
                coroutine function (run in a task of its own).
            on_gap: Called with a :class:`Gap` after a reconnect: the
                notifications sent meanwhile were missed.
            timeout: How long to wait for ``LISTEN`` (default: the pool's
                ``timeout``).

        Raises:
            TypeError, ValueError: a bad ``channel`` or a non-callable.
            PoolClosed: the pool (or the listener) is closed.
            PoolTimeout: ``LISTEN`` was not active in time (the server is
                unreachable); nothing stays subscribed.
        """
        sub = self._new_subscription(channel, callback, on_gap)
        await self._subscribe(sub, _listen_timeout(timeout, self._timeout))
        return sub

    def notifications(self, channel: str) -> AsyncNotifications:
        """An async iterator of the :class:`Notification` (and :class:`Gap`)
        items of ``channel``; see :class:`AsyncNotifications`."""
        return AsyncNotifications(self, _channel(channel))

    async def _subscribe(self, sub: Subscription, limit: float | None) -> None:
        if self._closed:
            raise PoolClosed(f"{self.name} is closed")
        self._subs.setdefault(sub.channel, []).append(sub)
        self._start()
        try:
            await bounded(self._until_active(sub.channel), limit)
        except TimeoutError:
            self._drop(sub)
            raise self._not_active(sub, limit) from None
        except BaseException:
            self._drop(sub)
            raise

    async def _until_active(self, channel: str) -> None:
        while channel not in self._active:
            if self._closed:
                raise PoolClosed(f"{self.name} is closed")
            self._settled.clear()
            self._wake.set()
            await self._settled.wait()

    def _drop(self, sub: Subscription) -> None:
        if self._forget(sub):
            self._wake.set()

    async def _unsubscribe(self, sub: Subscription) -> None:
        self._drop(sub)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name=self.name
            )

    def _call(self, sub: Subscription, fn: Callable[[Any], Any], arg: Any) -> None:
        try:
            result = fn(arg)
        except Exception:
            self._log.exception("%s: subscriber of %r raised", self.name, sub.channel)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._await_callback(sub, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _await_callback(self, sub: Subscription, aw: Awaitable[Any]) -> None:
        try:
            await aw
        except Exception:
            self._log.exception("%s: subscriber of %r raised", self.name, sub.channel)

    async def _supervise(self) -> None:
        attempt = 0
        while not self._closed:
            if not self._permit():
                delay = self._budget_full(attempt)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            try:
                conn = await bounded(
                    self._adapter.connect(self._dsn, self._kwargs), self._connect_timeout
                )
            except BaseException as exc:
                self._unpermit()
                if not isinstance(exc, Exception):
                    raise
                if self._closed:
                    break
                delay = self._connect_failed(exc, attempt)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._connected(conn)
            try:
                await self._serve(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._closed:
                    self._lost(exc)
            finally:
                self._active.clear()
                self._conn = None
                self._count(-1)
                try:
                    await self._let_go(conn)
                finally:
                    self._unpermit()
        self._settled.set()

    async def _let_go(self, conn: Any) -> None:
        if self._adapter.is_closed(conn):
            self._adapter.terminate(conn)
            return
        try:
            await asyncio.shield(self._adapter.close(conn, self._io_timeout))
        except BaseException:
            self._adapter.terminate(conn)
            raise

    async def _serve(self, conn: Any) -> None:
        adapter = self._adapter
        adapter.on_lost(conn, self._wake.set)
        while not self._closed:
            self._wake.clear()
            listen, unlisten = self._plan()
            for channel in listen:
                await adapter.listen(conn, channel, self._deliver, self._io_timeout)
                self._active.add(channel)
            for channel in unlisten:
                await adapter.unlisten(conn, channel, self._deliver, self._io_timeout)
                self._active.discard(channel)
            self._report_gap(monotonic())
            self._settled.set()
            if self._plan() != ([], []):
                continue  # subscribers came or went meanwhile
            waiting = asyncio.ensure_future(
                adapter.wait_notifications(conn, self._deliver, self._interval)
            )
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait((waiting, woken), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (waiting, woken):
                    fut.cancel()
                await asyncio.gather(waiting, woken, return_exceptions=True)
            failure = None if waiting.cancelled() else waiting.exception()
            if failure is not None:
                raise failure
            if adapter.is_closed(conn):
                raise ConnectionError("the server closed the listener's connection")
            if not woken.done() or woken.cancelled():
                # Silence for a whole interval: make sure the connection is alive.
                await adapter.ping(conn, self._io_timeout)

    async def aclose(self) -> None:
        """Close the connection (the server drops its LISTENs with the session)
        and end the iterators; subscribers hear nothing more."""
        if self._closed:
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)
            return
        self._closed = True
        self._end_all()
        self._wake.set()
        self._settled.set()
        task = self._task
        if task is not None and self._conn is None:
            task.cancel()  # connecting, or waiting to retry: nothing to close gracefully
        if task is not None:
            _, pending = await asyncio.wait({task}, timeout=self._io_timeout + 1.0)
            if pending:
                self.terminate()
            await asyncio.gather(task, return_exceptions=True)
        if self._tasks:  # async callbacks still running: a little time, then cancel
            _, late = await asyncio.wait(set(self._tasks), timeout=self._io_timeout)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def _forgotten(self) -> None:
        """The pool was collected unclosed: let go, even if its loop is gone."""
        with contextlib.suppress(Exception):
            self.terminate()

    def terminate(self) -> None:
        """Close at once, without talking to the server."""
        self._closed = True
        self._end_all()
        self._settled.set()
        if self._conn is not None:
            self._adapter.terminate(self._conn)
        if self._task is not None:
            self._task.cancel()


class _NotificationsBase:
    """What both iterators of one channel hold: the queue the listener puts
    the channel's items in, and the subscription that feeds it (``None``
    until the first step, or again after a subscribe that failed)."""

    def __init__(self, listener: Any, channel: str, items: Any, put: Callable[[Any], None]) -> None:
        self._listener = listener
        self.channel = channel
        self._queue = items
        self._put = put
        self._sub: _Queued | None = None
        self._done = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.channel!r} queued={self._queue.qsize()}>"

    def _begin(self, timeout: float | None) -> tuple[_Queued, float | None]:
        """Make the subscription (kept at once, so no second one starts
        meanwhile) and the bound its ``LISTEN`` gets."""
        limit = _listen_timeout(timeout, self._listener._timeout)
        self._sub = sub = _Queued(self._listener, self.channel, self._put)
        return sub, limit


class AsyncNotifications(_NotificationsBase):
    """``async for item in pool.notifications(channel)``: the items of one channel.

    Items are :class:`Notification` objects and, after a reconnect, a
    :class:`Gap` (notifications were missed).  Use it as a context manager
    so that the channel is unlistened as the block ends::

        async with pool.notifications("jobs") as notes:
            async for note in notes:
                if isinstance(note, Gap):
                    await reload_jobs()
                else:
                    handle(note.payload)

    A bare ``async for`` works too: it subscribes on its first step, and
    ``aclose()`` unsubscribes.  Iteration ends when the pool closes.
    """

    def __init__(self, listener: AsyncListener, channel: str) -> None:
        items: asyncio.Queue[Any] = asyncio.Queue()
        super().__init__(listener, channel, items, items.put_nowait)
        self._queue: asyncio.Queue[Any]

    async def subscribe(self, timeout: float | None = None) -> None:
        """``LISTEN`` now (the first step does it otherwise); see ``listen()``."""
        if self._sub is None:
            sub, limit = self._begin(timeout)
            try:
                await self._listener._subscribe(sub, limit)
            except BaseException:
                self._sub = None  # not subscribed: the next step tries again
                raise

    async def __aenter__(self) -> AsyncNotifications:
        await self.subscribe()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Notification | Gap]:
        return self

    async def __anext__(self) -> Notification | Gap:
        if self._done:
            raise StopAsyncIteration
        await self.subscribe()
        item = await self._queue.get()
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Unsubscribe; iteration ends."""
        self._done = True
        if self._sub is not None:
            self._listener._drop(self._sub)


# ----------------------------------------------------------------------
# threads


class Listener(_ListenerBase):
    """The LISTEN/NOTIFY listener of a thread :class:`~pgmarina.Pool`.

    The same as :class:`AsyncListener` without ``await``: a thread of its
    own owns the connection and calls the callbacks, so keep them short (or
    hand the work to a queue of yours).
    """

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self._lock = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()  # cuts a backoff sleep short

    def listen(
        self, channel: str, callback: Callable[[Notification], Any], *,
        on_gap: Callable[[Gap], Any] | None = None, timeout: float | None = None,
    ) -> Subscription:
        """Call ``callback(note)`` on the listener's thread for every
        notification on ``channel``; see :meth:`AsyncListener.listen`."""
        sub = self._new_subscription(channel, callback, on_gap)
        self._subscribe(sub, _listen_timeout(timeout, self._timeout))
        return sub

    def notifications(self, channel: str) -> Notifications:
        """A blocking iterator over ``channel``; see :class:`Notifications`."""
        return Notifications(self, _channel(channel))

    def _subscribe(self, sub: Subscription, limit: float | None) -> None:
        with self._lock:
            if self._closed:
                raise PoolClosed(f"{self.name} is closed")
            self._subs.setdefault(sub.channel, []).append(sub)
            if self._thread is None:
                self._thread = threading.Thread(target=self._supervise, name=self.name,
                                                daemon=True)
                self._thread.start()
            self._poke()
            if self._thread is threading.current_thread():
                # A callback subscribing: the thread that would LISTEN is
                # this one, so it does so once the callback returns.
                return
            ok = self._lock.wait_for(
                lambda: sub.channel in self._active or self._closed, limit
            )
            if ok and not self._closed:
                return
            self._drop_locked(sub)
            if self._closed:
                raise PoolClosed(f"{self.name} is closed")
            raise self._not_active(sub, limit)

    def _poke(self) -> None:
        # Full (a wake-up is pending anyway) or closed (the thread ended).
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")

    def _drop_locked(self, sub: Subscription) -> None:
        if self._forget(sub):
            self._poke()

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._drop_locked(sub)

    def _deliver(self, channel: str, payload: str, pid: int) -> None:
        with self._lock:
            subs = list(self._subs.get(channel, ()))
        note = Notification(channel, payload, pid)
        for sub in subs:
            self._call(sub, sub._notify, note)

    def _snapshot(self) -> dict[str, list[Subscription]]:
        with self._lock:
            return super()._snapshot()

    def _supervise(self) -> None:
        try:
            self._supervise_until_closed()
        except Exception:  # pragma: no cover - a bug: say so, and wake the callers
            self._log.exception("%s: the listener's thread failed", self.name)
            with self._lock:
                self._closed = True
                self._end_all()
                self._lock.notify_all()
        finally:
            # The thread owns the wake-up sockets once it runs: closed by
            # close(), terminate() or a pool's collection alike.
            self._close_wakers()

    def _close_wakers(self) -> None:
        with self._lock:
            self._wake_w.close()
            self._wake_r.close()

    def _supervise_until_closed(self) -> None:
        attempt = 0
        while not self._closed:
            if not self._permit():
                self._stop.wait(self._budget_full(attempt))
                attempt += 1
                continue
            try:
                conn = self._adapter.connect(self._dsn, self._kwargs, self._connect_timeout)
            except Exception as exc:
                self._unpermit()
                if self._closed:
                    break
                delay = self._connect_failed(exc, attempt)
                attempt += 1
                self._stop.wait(delay)
                continue
            attempt = 0
            self._connected(conn)
            try:
                self._serve(conn)
            except Exception as exc:
                if not self._closed:
                    self._lost(exc)
            finally:
                with self._lock:
                    self._active.clear()
                self._conn = None
                self._count(-1)
                try:
                    self._adapter.close(conn)
                except Exception:
                    self._adapter.terminate(conn)
                finally:
                    self._unpermit()
        with self._lock:
            self._lock.notify_all()

    def _bounded(self, fn: Callable[..., Any], conn: Any, *args: Any) -> None:
        """Run a blocking round trip; past ``reset_timeout`` the socket is shut
        down under it (a server that stopped answering must not hang us)."""
        timer = threading.Timer(self._io_timeout, self._adapter.interrupt, (conn,))
        timer.daemon = True
        timer.start()
        try:
            fn(conn, *args)
        finally:
            timer.cancel()

    def _serve(self, conn: Any) -> None:
        adapter = self._adapter
        while not self._closed:
            with self._lock:
                listen, unlisten = self._plan()
            for channel in listen:
                self._bounded(adapter.listen, conn, channel)
                with self._lock:
                    self._active.add(channel)
                    self._lock.notify_all()
            for channel in unlisten:
                self._bounded(adapter.unlisten, conn, channel)
                with self._lock:
                    self._active.discard(channel)
            self._report_gap(monotonic())
            with self._lock:
                if self._plan() != ([], []):
                    continue
            ready, _, _ = select.select(
                [adapter.socket_of(conn), self._wake_r], [], [], self._interval
            )
            if self._wake_r in ready:
                with contextlib.suppress(OSError):  # raised once drained
                    while self._wake_r.recv(64):
                        pass
            # Always: a LISTEN's reply can bring notifications along, which
            # the driver keeps and the socket no longer shows.
            adapter.drain_notifications(conn, self._deliver)
            if not ready:
                self._bounded(adapter.ping, conn)  # a whole interval of silence: still there?

    def close(self, timeout: float | None = 10.0) -> None:
        """Close the connection (the server drops its LISTENs with the session)
        and end the iterators, waiting up to ``timeout`` for the thread."""
        with self._lock:
            self._closed = True
            self._end_all()
            self._lock.notify_all()
        self._stop.set()
        self._poke()
        thread = self._thread
        if thread is None:
            self._close_wakers()
        elif thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                self.terminate()
                thread.join(timeout)

    def terminate(self) -> None:
        """Close at once: cut the connection off under the listener's thread."""
        with self._lock:
            self._closed = True
            self._end_all()
            self._lock.notify_all()
        self._stop.set()
        conn = self._conn
        if conn is not None:
            self._adapter.interrupt(conn)
        self._poke()


class Notifications(_NotificationsBase):
    """``for item in pool.notifications(channel)``: a blocking iterator.

    Items are :class:`Notification` objects and, after a reconnect, a
    :class:`Gap`.  ``with pool.notifications("jobs") as notes:`` subscribes
    at once and unsubscribes as the block ends; iteration ends when the
    pool closes.  :meth:`get` waits with a timeout.
    """

    def __init__(self, listener: Listener, channel: str) -> None:
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        super().__init__(listener, channel, items, items.put)
        self._queue: queue.SimpleQueue[Any]

    def subscribe(self, timeout: float | None = None) -> None:
        """``LISTEN`` now (the first step does it otherwise)."""
        if self._sub is None:
            sub, limit = self._begin(timeout)
            try:
                self._listener._subscribe(sub, limit)
            except BaseException:
                self._sub = None  # not subscribed: the next step tries again
                raise

    def __enter__(self) -> Notifications:
        self.subscribe()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Notification | Gap]:
        return self

    def __next__(self) -> Notification | Gap:
        item = self.get()
        if item is None:
            raise StopIteration
        return item

    def get(self, timeout: float | None = None) -> Notification | Gap | None:
        """The next item; ``None`` once the listener closed.

        Raises:
            TimeoutError: nothing came within ``timeout`` seconds.
        """
        if self._done:
            return None
        self.subscribe()
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no notification on {self.channel!r} within {timeout}s") from None
        if item is _END:
            self._done = True
            return None
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Unsubscribe; iteration ends."""
        self._done = True
        if self._sub is not None:
            self._listener._unsubscribe(self._sub)


def _check_callable(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, not {type(value).__name__}")
    if name == "callback" and value is None:
        raise TypeError("callback must be callable, not None")

