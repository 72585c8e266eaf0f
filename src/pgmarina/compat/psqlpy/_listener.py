"""psqlpy's ``Listener``: LISTEN/NOTIFY callbacks and iteration, over asyncpg.

The listener speaks psqlpy's API (``add_callback``, ``startup``,
``listen``, ``abort_listen``, ``shutdown``, ``clear_...``, ``async for``)
and gets its notifications from a *channel source*, a small interface
(:class:`_ChannelSource`) with one job: keep a set of channels LISTENed on
some connection, across losses of that connection, and report each
notification.  The one here (:class:`_DedicatedConnection`) holds its own
asyncpg connection and, when that connection is lost (a backend terminated,
a server restart), reconnects with backoff and LISTENs again to every
channel.  Notifications sent while it was away are lost, as they are for
any LISTEN.  A source built on pgmarina's pool listener can replace it
without the façade changing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from . import exceptions as exc
from ._connection import Connection

__all__ = ["Listener", "ListenerNotificationMsg"]

logger = logging.getLogger("pgmarina.compat.psqlpy")

_Notify = Callable[[int, str, str], None]


class _ChannelSource(Protocol):
    """Keeps channels LISTENed across reconnects; calls ``notify(pid, channel, payload)``."""

    @property
    def connection(self) -> Any:
        """The driver connection now listening (None while reconnecting)."""

    async def start(self, channels: set[str], notify: _Notify) -> None: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def stop(self) -> None: ...


class _DedicatedConnection:
    """A channel source on an asyncpg connection of its own, which it reconnects."""

    #: First and largest pause between reconnect attempts (jittered).
    backoff_initial = 0.05
    backoff_max = 2.0

    def __init__(
        self, dsn: str | None, connect_kwargs: dict[str, Any],
        configure: Callable[[Any], Awaitable[None]] | None,
    ) -> None:
        self._dsn = dsn
        self._connect_kwargs = connect_kwargs
        self._configure = configure
        self._con: Any = None
        self._channels: set[str] = set()
        self._notify: _Notify | None = None
        self._stopped = False
        self._reconnect: asyncio.Task[None] | None = None

    @property
    def connection(self) -> Any:
        return self._con

    async def start(self, channels: set[str], notify: _Notify) -> None:
        self._channels = set(channels)
        self._notify = notify
        self._con = await self._connect()

    async def _connect(self) -> Any:
        con = await asyncpg.connect(self._dsn, **self._connect_kwargs)
        try:
            if self._configure is not None:
                await self._configure(con)
            for channel in self._channels:
                await con.add_listener(channel, self._deliver)
        except BaseException:
            con.terminate()
            raise
        con.add_termination_listener(self._lost)
        return con

    def _deliver(self, con: Any, pid: int, channel: str, payload: str) -> None:
        if self._notify is not None and con is self._con:
            self._notify(pid, channel, payload)

    def _lost(self, con: Any) -> None:
        """The connection closed: unless we closed it, reconnect."""
        if self._stopped or con is not self._con:
            return
        self._con = None
        logger.warning("listener connection lost; reconnecting and LISTENing again")
        self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = self.backoff_initial
        while not self._stopped:
            try:
                con = await self._connect()
            except Exception as failed:  # the server may be down a while: keep trying
                logger.debug("listener reconnect failed: %s", type(failed).__name__)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max)
                continue
            if self._stopped:
                con.terminate()
                return
            self._con = con
            logger.info("listener reconnected; LISTENing to %d channel(s)", len(self._channels))
            return

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._con is not None:
            await self._con.add_listener(channel, self._deliver)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._con is not None:
            await self._con.remove_listener(channel, self._deliver)

    async def stop(self) -> None:
        self._stopped = True
        task, self._reconnect = self._reconnect, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        con, self._con = self._con, None
        if con is not None:
            try:
                await asyncio.wait_for(con.close(), 5)
            except Exception:
                con.terminate()


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
        await listener.add_callback("events", on_event)  # async (conn, payload, channel, pid)
        await listener.startup()
        listener.listen()           # callbacks run from now on, in tasks
        ...
        await listener.shutdown()

    Without ``listen()``, ``async for msg in listener`` yields
    :class:`ListenerNotificationMsg` items for the channels with callbacks.
    The listener's connection is its own, not one of the pool's; it is
    reconnected, and the channels LISTENed again, if it is lost.
    """

    def __init__(
        self, dsn: str | None, connect_kwargs: dict[str, Any],
        configure: Callable[[Any], Awaitable[None]] | None = None,
        source: _ChannelSource | None = None,
    ) -> None:
        self._source: _ChannelSource = source or _DedicatedConnection(
            dsn, connect_kwargs, configure
        )
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
        """Stop listening, close the connection, and end any ``async for``.

        Callbacks still running are cancelled.
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
