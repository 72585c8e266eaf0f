"""A TCP proxy that misbehaves on request, for testing how clients survive bad networks.

The proxy runs its own asyncio event loop in a daemon thread, so synchronous tests and tests
that run their own event loop (``asyncio.run``) use it the same way.  Every control method is
thread-safe and synchronous: when it returns, the change is in effect.  (Do not call them from
inside the proxy's own loop; nothing in a test does.)

    proxy = FaultProxy(cluster.host, cluster.port)
    conn = await asyncpg.connect(host=proxy.host, port=proxy.port, ...)
    proxy.blackhole()   # queries now hang
    proxy.pass_through()

Modes (exactly one is in effect; the latest call wins):

``pass_through()``
    Forward bytes unchanged (the initial mode).
``delay(seconds)``
    Each chunk is delivered ``seconds`` after the proxy read it, in both directions, in order.
    It is latency, not a throughput cap: chunks in flight do not wait for each other.
``blackhole()``
    Connections (existing and new) stay open, but every byte in either direction is silently
    dropped, and so is an orderly close (EOF) from either end - like a network partition.  An
    EOF that arrived while blackholed is delivered once the mode changes; dropped bytes are
    gone for good, so a connection that lost bytes is desynchronised and only fit to be closed.

Actions:

``reset_all()``
    Abort every current connection with a TCP RST to both ends (``SO_LINGER`` 0).  New
    connections are proxied as usual.
``stop_accepting()`` / ``start_accepting()``
    The listening socket is closed, so new connections are *refused* (the kernel answers SYN
    with RST: ``ConnectionRefusedError``), exactly like a server that is down.  Existing
    connections are unaffected.  ``start_accepting()`` binds the same port again.
``close()``
    Stop everything and abort all connections.  Idempotent; also a context manager.

If the target refuses the proxy's upstream connection, the client's connection is reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Literal, TypeVar

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass_through", "delay", "blackhole"]

_T = TypeVar("_T")
_CHUNK = 65536
_QUEUE_CHUNKS = 256
_CONTROL_TIMEOUT = 10.0
_EOF = b""


def _set_rst_on_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _nodelay(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Link:
    """One proxied connection: the client socket, its upstream socket, and the task serving
    them.  Setting ``abort`` ends it (with RST if ``reset``); it is never cancelled, because
    Python 3.10/3.11's ``wait_for`` can swallow a cancellation."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.task: asyncio.Task[None] | None = None
        self.abort = asyncio.Event()
        self.reset = False  # close with RST rather than FIN


class FaultProxy:
    """Forward 127.0.0.1:<ephemeral> to ``(target_host, target_port)``, with faults on demand."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self._target = (target_host, target_port)
        self._connect_timeout = connect_timeout
        self._mode: Mode = "pass_through"
        self._delay = 0.0
        self._links: set[_Link] = set()
        self._closed = False
        self._control_lock = threading.Lock()

        self._listener: socket.socket | None = self._bind(listen_host, listen_port)
        self._host: str = listen_host
        self._port: int = self._listener.getsockname()[1]

        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"faultproxy:{self._port}", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        self._unblocked = self._call(self._make_event())
        self._call(self._start_accepting())

    # -- public API --------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def target(self) -> tuple[str, int]:
        return self._target

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def accepting(self) -> bool:
        """False between stop_accepting() and start_accepting()."""
        return self._listener is not None

    @property
    def connection_count(self) -> int:
        """Proxied connections currently open (accepted and not yet fully closed)."""
        return len(self._links)

    def pass_through(self) -> None:
        """Forward bytes unchanged; releases a blackhole."""
        self._set_mode("pass_through", 0.0)

    def delay(self, seconds: float) -> None:
        """Deliver each chunk ``seconds`` late, in both directions."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._set_mode("delay", float(seconds))

    def blackhole(self) -> None:
        """Keep connections open but drop every byte (and every EOF) in both directions."""
        self._set_mode("blackhole", 0.0)

    def reset_all(self) -> int:
        """Abort every current connection with RST to both ends; returns how many."""
        return self._control(self._reset_all())

    def stop_accepting(self) -> None:
        """Close the listening socket: new connections get ECONNREFUSED."""
        self._control(self._stop_accepting())

    def start_accepting(self) -> None:
        """Listen on the same port again."""
        self._control(self._start_accepting())

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> None:
        """Block until exactly ``count`` proxied connections are open (TimeoutError if not)."""
        deadline = time.monotonic() + timeout
        while self.connection_count != count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.connection_count} proxied connections open, wanted {count}"
                )
            time.sleep(0.005)

    def close(self) -> None:
        """Abort all connections, stop listening, stop the thread.  Idempotent."""
        with self._control_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CONTROL_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<FaultProxy {self._host}:{self._port} -> {self._target[0]}:{self._target[1]} "
            f"mode={self._mode} connections={self.connection_count}>"
        )

    # -- plumbing between threads ------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            # Normally nothing is left; if shutdown went wrong, still close every socket.
            leftovers = asyncio.all_tasks(self._loop)
            for task in leftovers:
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            for link in list(self._links):
                self._close_link_sockets(link)
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.run_until_complete(self._loop.shutdown_default_executor())

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("FaultProxy control methods cannot be called from its own loop")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT)

    def _control(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._closed:
            coro.close()
            raise RuntimeError("FaultProxy is closed")
        return self._call(coro)

    def _set_mode(self, mode: Mode, delay: float) -> None:
        self._control(self._apply_mode(mode, delay))

    # -- coroutines run on the proxy loop ----------------------------------------------------

    async def _make_event(self) -> asyncio.Event:
        event = asyncio.Event()
        event.set()
        return event

    async def _apply_mode(self, mode: Mode, delay: float) -> None:
        self._mode = mode
        self._delay = delay
        if mode == "blackhole":
            self._unblocked.clear()
        else:
            self._unblocked.set()

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _on_acceptable(self) -> None:
        """Reader callback on the listening socket: accept whatever is pending.

        A plain callback rather than a task awaiting ``sock_accept``: cancelling that task
        could drop a just-accepted socket on the floor.
        """
        listener = self._listener
        if listener is None:
            return
        loop = asyncio.get_running_loop()
        for _ in range(64):
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ECONNABORTED (peer gave up), EMFILE...: try again later
                return
            client.setblocking(False)
            _nodelay(client)
            link = _Link(client)
            self._links.add(link)
            link.task = loop.create_task(self._serve(link))

    async def _stop_accepting(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener)
            self._listener.close()
            self._listener = None

    async def _start_accepting(self) -> None:
        if self._listener is None:
            self._listener = self._bind(self._host, self._port)
        asyncio.get_running_loop().add_reader(self._listener, self._on_acceptable)

    async def _reset_all(self) -> int:
        links = list(self._links)
        for link in links:
            link.reset = True
            link.abort.set()
        await asyncio.gather(*(lk.task for lk in links if lk.task), return_exceptions=True)
        return len(links)

    async def _shutdown(self) -> None:
        await self._stop_accepting()
        await self._reset_all()

    @staticmethod
    def _close_link_sockets(link: _Link) -> None:
        for sock in (link.client, link.upstream):
            if sock is not None and sock.fileno() != -1:
                if link.reset:
                    _set_rst_on_close(sock)
                sock.close()

    async def _serve(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        aborted = loop.create_task(link.abort.wait())
        tasks: list[asyncio.Task[None]] = [aborted]
        try:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            link.upstream = upstream
            upstream.setblocking(False)
            _nodelay(upstream)
            connect = loop.create_task(loop.sock_connect(upstream, self._target))
            tasks.append(connect)
            await asyncio.wait(
                {connect, aborted},
                timeout=self._connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not connect.done() or connect.cancelled() or connect.exception() is not None:
                link.reset = True  # upstream refused or timed out: reset the client too
                return
            if aborted.done():
                return
            for src, dst in ((link.client, upstream), (upstream, link.client)):
                queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
                tasks.append(loop.create_task(self._read_side(src, queue)))
                tasks.append(loop.create_task(self._write_side(dst, queue)))
            pending: set[asyncio.Task[None]] = set(tasks[2:])
            while pending:
                done, _ = await asyncio.wait(
                    pending | {aborted}, return_when=asyncio.FIRST_COMPLETED
                )
                if aborted in done:
                    return
                pending -= done
                if any(t.exception() is not None for t in done):
                    # A reset or broken pipe on one side: pass the abort on to the other side.
                    link.reset = True
                    return
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._close_link_sockets(link)
            self._links.discard(link)

    async def _read_side(
        self, src: socket.socket, queue: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(src, _CHUNK)
            if not data:
                await self._unblocked.wait()  # a partition swallows the FIN too
                await queue.put((loop.time() + self._delay, _EOF))
                return
            if self._mode == "blackhole":
                continue
            await queue.put((loop.time() + self._delay, data))

    async def _write_side(
        self, dst: socket.socket, queue: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data == _EOF:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            if self._mode == "blackhole":
                continue
            await loop.sock_sendall(dst, data)
