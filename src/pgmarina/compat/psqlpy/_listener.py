"""psqlpy's ``Listener``: LISTEN/NOTIFY callbacks and iteration, over asyncpg.

The listener speaks psqlpy's API (``add_callback``, ``startup``,
``listen``, ``abort_listen``, ``shutdown``, ``clear_...``, ``async for``)
and gets its notifications from pgmarina's own listener
(:class:`pgmarina.listener.AsyncListener`) of the façade's pool for the
running loop: one connection outside the pool's slots which, when it is
lost (a backend terminated, a server restart), reconnects with backoff and
LISTENs again to every channel.  Notifications sent while it was away are
lost, as they are for any LISTEN.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ...listener import AsyncListener, Gap, Notification, Subscription
from . import exceptions as exc
from ._connection import Connection

__all__ = ["Listener", "ListenerNotificationMsg"]

logger = logging.getLogger("pgmarina.compat.psqlpy")

_Notify = Callable[[int, str, str], None]


class _PoolSource:
    """The channels of one façade ``Listener``, subscribed on the pool's listener.

    Several façade listeners share the pool's one listener connection; each
    holds subscriptions of its own, so shutting one down leaves the others
    listening.
    """

    def __init__(self, listener_of_pool: Callable[[], AsyncListener]) -> None:
        self._listener_of_pool = listener_of_pool
        self._listener: AsyncListener | None = None
        self._subs: dict[str, Subscription] = {}
        self._notify: _Notify | None = None

    @property
    def connection(self) -> Any:
        """The asyncpg connection listening now (``None`` while reconnecting)."""
        return None if self._listener is None else self._listener._conn

    async def start(self, channels: set[str], notify: _Notify) -> None:
        self._notify = notify
        self._listener = self._listener_of_pool()
        try:
            for channel in channels:
                await self.subscribe(channel)
        except BaseException:
            await self.stop()
            raise

    def _deliver(self, note: Notification) -> None:
        if self._notify is not None:
            self._notify(note.pid, note.channel, note.payload)

    @staticmethod
    def _gap(gap: Gap) -> None:
        logger.warning(
            "listener connection was lost for %.3gs; LISTENing to %r again (notifications "
            "sent meanwhile were missed)", gap.seconds, gap.channel,
        )

    async def subscribe(self, channel: str) -> None:
        assert self._listener is not None
        self._subs[channel] = await self._listener.listen(
            channel, self._deliver, on_gap=self._gap
        )

    async def unsubscribe(self, channel: str) -> None:
        sub = self._subs.pop(channel, None)
        if sub is not None:
            await sub.unlisten()

    async def stop(self) -> None:
        self._notify = None
        for channel in list(self._subs):
            await self.unsubscribe(channel)
        self._listener = None


@dataclass(frozen=True)
class ListenerNotificationMsg:
    """One notification, as ``async for msg in listener`` gives it."""

    process_id: int
    channel: str
    payload: str
    connection: Connection


_END = object()


class Listener:
    """psqlpy's ``Listener``: call async callbacks on notifications, or iterate them.

    ::

        listener = pool.listener()
        # on_event: async def on_event(connection, payload, channel, process_id)
        await listener.add_callback("events", on_event)
        await listener.startup()
        listener.listen()           # callbacks run from now on, in tasks
        ...
        await listener.shutdown()

    Without ``listen()``, ``async for msg in listener`` yields
    :class:`ListenerNotificationMsg` items for the channels with callbacks.
    Notifications come through the pool's listener
    (:meth:`pgmarina.AsyncPool.listener`): one connection outside the pool's
    slots, shared by every ``Listener`` of the pool, which reconnects and
    LISTENs again to every channel if it is lost.  Notifications sent while
    it was away are missed, and a warning says so.
    """

    def __init__(self, listener_of_pool: Callable[[], AsyncListener]) -> None:
        self._source = _PoolSource(listener_of_pool)
        self._callbacks: dict[str, list[Callable[..., Awaitable[None]]]] = {}
        self.is_started = False
        self._shut = False
        self._listening = False
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._running: set[asyncio.Task[Any]] = set()

    @property
    def connection(self) -> Connection:
        """The listener's connection, in psqlpy's ``Connection`` API.

        Raises:
            ListenerStartError: not started, or reconnecting just now.
        """
        con = self._source.connection if self.is_started else None
        if con is None:
            raise exc.ListenerStartError("Listener isn't started up")
        return Connection(con, None)

    async def add_callback(self, channel: str, callback: Callable[..., Awaitable[None]]) -> None:
        """Call ``await callback(connection, payload, channel, process_id)`` per notification.

        Raises:
            ListenerCallbackError: ``callback`` is not an ``async def`` function.
            ListenerClosedError: the listener was shut down.
        """
        if not isinstance(channel, str) or not channel:
            raise ValueError("channel must be a non-empty str")
        if not inspect.iscoroutinefunction(callback):
            raise exc.ListenerCallbackError("callback must be an async function")
        self._check_open()
        new = channel not in self._callbacks
        self._callbacks.setdefault(channel, []).append(callback)
        if new and self.is_started:
            await self._source.subscribe(channel)

    async def clear_channel_callbacks(self, channel: str) -> None:
        """Forget ``channel``'s callbacks and stop LISTENing to it."""
        if self._callbacks.pop(channel, None) is not None and self.is_started:
            await self._source.unsubscribe(channel)

    async def clear_all_channels(self) -> None:
        """Forget every callback and LISTEN to nothing."""
        for channel in list(self._callbacks):
            await self.clear_channel_callbacks(channel)

    async def startup(self) -> None:
        """Connect and LISTEN to the channels with callbacks.

        Raises:
            ListenerStartError: already started, or the connect failed (its
                error is the cause).
            ListenerClosedError: the listener was shut down.
        """
        self._check_open()
        if self.is_started:
            raise exc.ListenerStartError("Listener is already started")
        try:
            await self._source.start(set(self._callbacks), self._notified)
        except Exception as failed:
            raise exc.ListenerStartError(f"Listener start error: {failed}") from failed
        self.is_started = True

    def listen(self) -> None:
        """Run the callbacks on notifications from now on (each in a task).

        Raises:
            ListenerStartError: not started.
        """
        if not self.is_started:
            raise exc.ListenerStartError("Listener isn't started up")
        self._listening = True

    def abort_listen(self) -> None:
        """Stop running callbacks (notifications are queued for ``async for`` again)."""
        self._listening = False

    async def shutdown(self) -> None:
        """Stop listening to this listener's channels, and end any ``async for``.

        Callbacks still running are cancelled.  The pool's listener
        connection stays open for the pool's other listeners; it closes with
        the pool.
        """
        self._listening = False
        self._shut = True
        was_started, self.is_started = self.is_started, False
        if was_started:
            await self._source.stop()
        running, self._running = self._running, set()
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        self._queue.put_nowait(_END)

    def _check_open(self) -> None:
        if self._shut:
            raise exc.ListenerClosedError("Listener is shut down")

    def _notified(self, pid: int, channel: str, payload: str) -> None:
        callbacks = self._callbacks.get(channel)
        if not callbacks:
            return
        conn = Connection(self._source.connection, None)
        if not self._listening:
            self._queue.put_nowait(ListenerNotificationMsg(pid, channel, payload, conn))
            return
        for callback in callbacks:
            task = asyncio.ensure_future(self._call(callback, conn, payload, channel, pid))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    @staticmethod
    async def _call(callback: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await callback(*args)
        except Exception:
            logger.exception("listener callback for channel %r failed", args[2])

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> ListenerNotificationMsg:
        if not self.is_started and self._queue.empty():
            raise exc.ListenerStartError("Listener isn't started up")
        msg = await self._queue.get()
        if msg is _END:
            self._queue.put_nowait(_END)  # for any other iterator
            raise StopAsyncIteration
        return msg  # type: ignore[no-any-return]

    async def __aenter__(self) -> Listener:
        await self.startup()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        state = "started" if self.is_started else ("shut down" if self._shut else "new")
        return f"<psqlpy-compat Listener [{state}] channels={sorted(self._callbacks)}>"
