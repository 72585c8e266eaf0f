"""Fake drivers for testing the pool shells without a database.

``FakeAsyncAdapter`` (for :class:`~pgmarina.AsyncPool`) and ``FakeSyncAdapter``
(for :class:`~pgmarina.Pool`) hand out :class:`FakeConnection` objects: plain
objects with a settable transaction ``status`` and a ``closed`` flag.  Both
adapters share one scriptable behaviour (:class:`_FakeDriver`):

* ``fail_connects(times)`` makes the next ``times`` connects raise (``None``:
  until ``heal()``); the error comes from ``connect_error(dsn, kwargs)``;
* ``connect_gate`` (a :class:`Gate`) holds every connect until it is set, and
  ``connect_delay`` makes each connect take that long;
* ``fail_io(name, error, times)`` makes the IO method ``name`` (``"ping"``,
  ``"rollback"``, ``"full_reset"``, ``"close"``, ``"settle"``) raise, and
  ``hang[name]`` makes it wait for a :class:`Gate` first (async methods still
  honour their timeout);
* ``settle_result`` is what ``settle`` returns;
* every call, local inspection (``status``, ``is_closed``, ``validate``)
  included, is recorded in ``calls`` as a :class:`Call`;
  ``io_calls_since(mark)`` picks out the ones that would be round trips.

The fakes are thread-safe: the thread pool calls them from worker threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pgmarina.adapters import BROKEN, BUSY, CLEAN, IN_TRANSACTION, AsyncAdapter, SyncAdapter
from pgmarina.adapters.base import bounded

__all__ = [
    "BROKEN",
    "BUSY",
    "CLEAN",
    "IN_TRANSACTION",
    "Call",
    "FakeAsyncAdapter",
    "FakeConnection",
    "FakeSyncAdapter",
    "Gate",
]

#: IO methods whose failure / hanging a test can script.
IO_METHODS = ("close", "settle", "rollback", "full_reset", "ping")


class Gate:
    """A latch that sync code waits on directly and async code by polling.

    It wraps a ``threading.Event`` so that a test may open it from any thread
    (or from the event loop) whichever kind of pool is under test.
    """

    def __init__(self, is_open: bool = False) -> None:
        self._event = threading.Event()
        if is_open:
            self._event.set()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    async def wait_async(self) -> None:
        while not self._event.is_set():
            await asyncio.sleep(0.002)


class FakeConnection:
    """What the fake driver's connect returns."""

    def __init__(self, id: int, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        self.id = id
        self.dsn = dsn
        self.kwargs = dict(kwargs)
        self.status = CLEAN
        self.closed = False
        self.terminated = False
        self.closed_gracefully = False
        self.queries: list[str] = []

    # -- what a borrower does with it (reached through the lease) ---------

    def execute(self, query: str) -> str:
        if self.closed:
            raise ConnectionResetError("fake connection is closed")
        self.queries.append(query)
        return f"ok: {query}"

    def begin(self) -> None:
        """Open a transaction: the pool must roll it back on release."""
        self.status = IN_TRANSACTION

    def start_query(self) -> None:
        """Leave a query in flight: the pool must settle it on release."""
        self.status = BUSY

    def break_(self) -> None:
        """Lose the server connection."""
        self.closed = True
        self.status = BROKEN

    def __repr__(self) -> str:
        flags = " closed" if self.closed else ""
        return f"<FakeConnection #{self.id} status={self.status}{flags}>"


class FakeAsyncConnection(FakeConnection):
    """Connections of the async fake (a class of its own for isinstance tests)."""


class FakeSyncConnection(FakeConnection):
    """Connections of the sync fake."""


@dataclass(frozen=True)
class Call:
    """One recorded adapter call."""

    name: str
    conn: FakeConnection | None
    at: float = field(default_factory=time.monotonic)
    args: tuple[Any, ...] = ()


def default_connect_error(dsn: str | None, kwargs: Mapping[str, Any]) -> BaseException:
    return ConnectionRefusedError(111, "Connection refused")


class _FakeDriver:
    """State and scripting shared by both fake adapters."""

    connection_class: type[FakeConnection] = FakeConnection

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self.connections: list[FakeConnection] = []
        # connect scripting
        self._failures_left: int | None = 0  # None: fail until heal()
        self.connect_error: Callable[[str | None, Mapping[str, Any]], BaseException] = (
            default_connect_error
        )
        self.errors_raised: list[BaseException] = []
        self.connect_gate: Gate | None = None
        self.connect_delay = 0.0
        #: (start, end, ok) of every connect attempt, in the order they ended
        self.attempts: list[tuple[float, float, bool]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        # IO scripting
        self.fail: dict[str, BaseException] = {}
        self._fail_times: dict[str, int] = {}
        self.hang: dict[str, Gate] = {}
        self.settle_result = True
        self.validated: list[tuple[str | None, dict[str, Any]]] = []

    # -- scripting ----------------------------------------------------------

    def fail_connects(self, times: int | None = None) -> None:
        """Fail the next ``times`` connects (``None``: until :meth:`heal`)."""
        with self._lock:
            self._failures_left = times

    def heal(self) -> None:
        with self._lock:
            self._failures_left = 0

    def fail_io(self, name: str, error: BaseException, times: int | None = None) -> None:
        """Make IO method ``name`` raise ``error`` (the next ``times`` calls, or always)."""
        assert name in IO_METHODS, name
        with self._lock:
            self.fail[name] = error
            if times is None:
                self._fail_times.pop(name, None)
            else:
                self._fail_times[name] = times

    # -- inspection ---------------------------------------------------------

    def record(self, name: str, conn: FakeConnection | None = None, *args: Any) -> None:
        with self._lock:
            self.calls.append(Call(name, conn, time.monotonic(), args))

    def names(self) -> list[str]:
        with self._lock:
            return [c.name for c in self.calls]

    def count(self, name: str, conn: FakeConnection | None = None) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.name == name and (conn is None or c.conn is conn))

    def calls_on(self, conn: FakeConnection) -> list[str]:
        with self._lock:
            return [c.name for c in self.calls if c.conn is conn]

    def io_calls_since(self, index: int) -> list[str]:
        """Names of round-trip calls (not local inspection) recorded after ``index``."""
        with self._lock:
            return [
                c.name
                for c in self.calls[index:]
                if c.name in IO_METHODS or c.name in ("connect", "undo")
            ]

    def mark(self) -> int:
        """Position in ``calls`` to compare against later."""
        with self._lock:
            return len(self.calls)

    @property
    def failed_attempts(self) -> list[tuple[float, float, bool]]:
        with self._lock:
            return [a for a in self.attempts if not a[2]]

    # -- pieces of connect ----------------------------------------------------

    def _begin_connect(self) -> float:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return time.monotonic()

    def _finish_connect(
        self, start: float, dsn: str | None, kwargs: Mapping[str, Any]
    ) -> FakeConnection:
        with self._lock:
            self.in_flight -= 1
            end = time.monotonic()
            left = self._failures_left
            failing = left is None or left > 0
            if failing:
                if left is not None:
                    self._failures_left = left - 1
                error = self.connect_error(dsn, kwargs)
                self.errors_raised.append(error)
                self.attempts.append((start, end, False))
                self.calls.append(Call("connect", None, end, ("failed",)))
            else:
                conn = self.connection_class(len(self.connections) + 1, dsn, kwargs)
                self.connections.append(conn)
                self.attempts.append((start, end, True))
                self.calls.append(Call("connect", conn, end))
        if failing:
            raise error
        return conn

    def _abort_connect(self, start: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.attempts.append((start, time.monotonic(), False))

    # -- local inspection (no IO) -------------------------------------------

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        self.record("validate", None, dsn, dict(kwargs))
        self.validated.append((dsn, dict(kwargs)))
        if "sslmode" in kwargs and kwargs["sslmode"] not in ("disable", "require"):
            raise ValueError(f"sslmode {kwargs['sslmode']!r} is not valid")

    def is_closed(self, conn: Any) -> bool:
        self.record("is_closed", conn)
        return bool(conn.closed)

    def status(self, conn: Any) -> int:
        self.record("status", conn)
        if conn.closed:
            return BROKEN
        return int(conn.status)

    def terminate(self, conn: Any) -> None:
        self.record("terminate", conn)
        conn.closed = True
        conn.terminated = True
        conn.status = BROKEN

    def _after_io(self, name: str, conn: FakeConnection) -> Any:
        """Raise a scripted failure, else apply the call's effect."""
        with self._lock:
            error = self.fail.get(name)
            if error is not None and name in self._fail_times:
                self._fail_times[name] -= 1
                if self._fail_times[name] <= 0:
                    del self._fail_times[name]
                    del self.fail[name]
        if error is not None:
            raise error
        if name == "close":
            conn.closed = True
            conn.closed_gracefully = True
            conn.status = BROKEN
        elif name == "settle":
            if self.settle_result:
                conn.status = CLEAN
            return self.settle_result
        elif name in ("rollback", "full_reset"):
            conn.status = CLEAN
        elif name == "ping" and conn.closed:
            raise ConnectionResetError("fake connection is closed")
        return None


class FakeAsyncAdapter(_FakeDriver, AsyncAdapter):
    """A scriptable async driver for :class:`~pgmarina.AsyncPool`."""

    name = "fake-async"
    connection_class = FakeAsyncConnection

    async def connect(self, dsn: str | None, kwargs: Mapping[str, Any]) -> Any:
        start = self._begin_connect()
        try:
            if self.connect_gate is not None:
                await self.connect_gate.wait_async()
            if self.connect_delay:
                await asyncio.sleep(self.connect_delay)
        except BaseException:
            self._abort_connect(start)
            raise
        return self._finish_connect(start, dsn, kwargs)

    async def _io(self, name: str, conn: FakeConnection, timeout: float) -> Any:
        self.record(name, conn, timeout)
        gate = self.hang.get(name)
        if gate is not None:
            await bounded(gate.wait_async(), timeout)
        return self._after_io(name, conn)

    async def close(self, conn: Any, timeout: float) -> None:
        await self._io("close", conn, timeout)

    async def settle(self, conn: Any, timeout: float) -> bool:
        return bool(await self._io("settle", conn, timeout))

    async def rollback(self, conn: Any, timeout: float) -> None:
        await self._io("rollback", conn, timeout)

    async def full_reset(self, conn: Any, timeout: float) -> None:
        await self._io("full_reset", conn, timeout)

    async def ping(self, conn: Any, timeout: float) -> None:
        await self._io("ping", conn, timeout)


class FakeSyncAdapter(_FakeDriver, SyncAdapter):
    """A scriptable blocking driver for the thread :class:`~pgmarina.Pool`."""

    name = "fake-sync"
    connection_class = FakeSyncConnection
    #: Longest a hanging call waits for its gate (a safety net for broken tests).
    hang_limit = 10.0

    def connect(self, dsn: str | None, kwargs: Mapping[str, Any], timeout: float) -> Any:
        start = self._begin_connect()
        try:
            if self.connect_gate is not None:
                self.connect_gate.wait(self.hang_limit)
            if self.connect_delay:
                time.sleep(self.connect_delay)
        except BaseException:
            self._abort_connect(start)
            raise
        return self._finish_connect(start, dsn, kwargs)

    def _io(self, name: str, conn: FakeConnection, *args: Any) -> Any:
        self.record(name, conn, *args)
        gate = self.hang.get(name)
        if gate is not None and not gate.wait(self.hang_limit):
            raise TimeoutError(f"fake {name} hung for {self.hang_limit}s")
        return self._after_io(name, conn)

    def close(self, conn: Any) -> None:
        self._io("close", conn)

    def settle(self, conn: Any, timeout: float) -> bool:
        return bool(self._io("settle", conn, timeout))

    def rollback(self, conn: Any) -> None:
        self._io("rollback", conn)

    def full_reset(self, conn: Any) -> None:
        self._io("full_reset", conn)

    def ping(self, conn: Any) -> None:
        self._io("ping", conn)
