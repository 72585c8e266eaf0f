"""psycopg 3 adapters, for ``AsyncPool(driver="psycopg")`` and ``Pool(driver="psycopg")``.

psycopg keeps libpq's transaction status locally (``pgconn.transaction_status``),
so release decides without a round trip whether a ROLLBACK is due.  Following
psycopg's own convention, ``pool.connection()`` commits when the block ends
normally and rolls back when it raises, unless the connection is in
autocommit.  Pings run in autocommit for a moment, so a health check never
leaves a transaction open behind it.

Keywords ``connection_class`` (a ``psycopg.Connection``/``AsyncConnection``
subclass), ``autocommit``, ``prepare_threshold``, ``row_factory``,
``cursor_factory`` and ``context`` go to ``connect()`` as psycopg takes them;
all other keywords are libpq connection parameters and are checked up front.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from operator import attrgetter
from typing import Any

from .._lease import Lease, forward
from .base import (
    BROKEN,
    BUSY,
    CLEAN,
    IN_TRANSACTION,
    AsyncAdapter,
    SyncAdapter,
    bounded,
    rejected_for_good,
    with_connect_timeout,
)

try:
    import psycopg
    from psycopg import pq
except ImportError:  # pragma: no cover - checked by adapters.resolve
    psycopg = None  # type: ignore[assignment]

__all__ = ["AsyncPsycopgAdapter", "PsycopgAdapter", "PsycopgLease"]

_CONNECT_OPTIONS = frozenset(
    {"autocommit", "prepare_threshold", "row_factory", "cursor_factory", "context"}
)


def _status_table() -> dict[int, int]:
    ts = pq.TransactionStatus
    if ts.IDLE != CLEAN:  # pragma: no cover - libpq's codes are fixed
        raise RuntimeError("libpq's IDLE transaction status is not 0")
    return {
        ts.IDLE: CLEAN,
        ts.INTRANS: IN_TRANSACTION,
        ts.INERROR: IN_TRANSACTION,
        ts.ACTIVE: BUSY,
        ts.UNKNOWN: BROKEN,
    }


_STATUS = _status_table() if psycopg is not None else {}


def _status(conn: Any) -> int:
    # libpq reports UNKNOWN for a closed or failed connection: BROKEN.
    return _STATUS.get(conn.pgconn.transaction_status, BROKEN)


def _validate(dsn: str | None, kwargs: Mapping[str, Any], base: type) -> None:
    cls = kwargs.get("connection_class", base)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"connection_class must be a subclass of {base.__qualname__}, not {cls!r}")
    params = {k: v for k, v in kwargs.items() if k not in _CONNECT_OPTIONS | {"connection_class"}}
    try:
        psycopg.conninfo.make_conninfo(dsn or "", **params)
    except psycopg.ProgrammingError as exc:
        raise TypeError(f"connect keywords rejected by libpq: {exc}") from None


def _connect_args(kwargs: Mapping[str, Any], base: type) -> tuple[Any, dict[str, Any]]:
    rest = dict(kwargs)
    return rest.pop("connection_class", base), rest


# libpq's own transaction status, read without a Python frame on every
# release: its IDLE is 0, which is CLEAN (checked when the table is built).
_libpq_status: Callable[[Any], int] = attrgetter("pgconn.transaction_status")

# Checked on every checkout, so read without a Python frame: libpq's status
# is CONNECTION_OK (0) for a usable connection, CONNECTION_BAD once closed.
_closed: Callable[[Any], bool] = attrgetter("pgconn.status")


class PsycopgLease(Lease):
    """Lease of a psycopg connection that remembers notify/notice handlers."""

    __slots__ = ()

    def add_notify_handler(self, callback: Any) -> None:
        self._con.add_notify_handler(callback)
        self._note(("notify", callback))

    def add_notice_handler(self, callback: Any) -> None:
        self._con.add_notice_handler(callback)
        self._note(("notice", callback))


forward(PsycopgLease, "execute", "cursor", "commit", "rollback", "transaction", "pipeline")


def _undo(conn: Any, undo: list[Any]) -> None:
    for kind, callback in reversed(undo):
        if kind == "notify":
            conn.remove_notify_handler(callback)
        else:
            conn.remove_notice_handler(callback)


def _needs_end(conn: Any) -> bool:
    # A closed connection reads as BROKEN, so this is False for it too.
    return _status(conn) == IN_TRANSACTION and not conn.autocommit


def _is_permanent(exc: BaseException) -> bool:
    # libpq reports a failed login with the server's message and no SQLSTATE.
    return isinstance(exc, psycopg.OperationalError) and rejected_for_good(exc.sqlstate, str(exc))


class AsyncPsycopgAdapter(AsyncAdapter):
    """``psycopg.AsyncConnection`` for :class:`~pgmarina.AsyncPool`."""

    name = "psycopg"
    lease_class = PsycopgLease
    transactional_context = True
    status = staticmethod(_status)
    quick_status = staticmethod(_libpq_status)  # type: ignore[assignment]  # a C getter

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        _validate(dsn, kwargs, psycopg.AsyncConnection)

    async def connect(self, dsn: str | None, kwargs: Mapping[str, Any]) -> Any:
        cls, rest = _connect_args(kwargs, psycopg.AsyncConnection)
        return await cls.connect(dsn or "", **rest)

    is_closed = staticmethod(_closed)  # type: ignore[assignment]  # a C getter, no frame

    def terminate(self, conn: Any) -> None:
        conn.pgconn.finish()

    is_permanent = staticmethod(_is_permanent)

    async def close(self, conn: Any, timeout: float) -> None:
        await bounded(conn.close(), timeout)

    async def rollback(self, conn: Any, timeout: float) -> None:
        await _bounded_io(conn, conn.rollback(), timeout)

    async def _in_autocommit(self, conn: Any, query: str) -> None:
        if conn.autocommit:
            await conn.execute(query)
            return
        await conn.set_autocommit(True)
        try:
            await conn.execute(query)
        finally:
            if not conn.closed:
                await conn.set_autocommit(False)

    async def full_reset(self, conn: Any, timeout: float) -> None:
        if _status(conn) == IN_TRANSACTION:
            await _bounded_io(conn, conn.rollback(), timeout)
        await _bounded_io(conn, self._in_autocommit(conn, "DISCARD ALL"), timeout)

    async def ping(self, conn: Any, timeout: float) -> None:
        await _bounded_io(conn, self._in_autocommit(conn, ""), timeout)

    async def end_block(self, conn: Any, failed: bool) -> None:
        if _needs_end(conn):
            await (conn.rollback() if failed else conn.commit())

    async def undo(self, conn: Any, undo: list[Any]) -> None:
        _undo(conn, undo)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _bounded_io(conn: Any, aw: Awaitable[Any], timeout: float) -> Any:
    """Run one IO step on ``conn``, cutting the connection off if it overruns.

    Cancelling psycopg mid-query makes it send a cancel request and wait for
    the server, which on a dead network never answers.  So on timeout (or if
    the caller is cancelled) the socket is closed first; psycopg then fails
    at once and the step's task is cancelled and left to finish alone.
    """
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except BaseException:
        conn.pgconn.finish()
        task.cancel()
        task.add_done_callback(_consume)
        raise
    if not done:
        conn.pgconn.finish()
        task.cancel()
        task.add_done_callback(_consume)
        raise TimeoutError(f"gave up after {timeout:g}s; connection closed")
    return task.result()


class PsycopgAdapter(SyncAdapter):
    """``psycopg.Connection`` for the thread :class:`~pgmarina.Pool`."""

    name = "psycopg"
    lease_class = PsycopgLease
    transactional_context = True
    status = staticmethod(_status)
    quick_status = staticmethod(_libpq_status)  # type: ignore[assignment]  # a C getter

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        _validate(dsn, kwargs, psycopg.Connection)

    def connect(self, dsn: str | None, kwargs: Mapping[str, Any], timeout: float) -> Any:
        cls, rest = _connect_args(with_connect_timeout(dsn, kwargs, timeout), psycopg.Connection)
        return cls.connect(dsn or "", **rest)

    is_closed = staticmethod(_closed)  # type: ignore[assignment]  # a C getter, no frame

    def terminate(self, conn: Any) -> None:
        conn.pgconn.finish()

    is_permanent = staticmethod(_is_permanent)

    def close(self, conn: Any) -> None:
        conn.close()

    def socket_of(self, conn: Any) -> int:
        return int(conn.pgconn.socket)

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def _in_autocommit(self, conn: Any, query: str) -> None:
        if conn.autocommit:
            conn.execute(query)
            return
        conn.autocommit = True
        try:
            conn.execute(query)
        finally:
            if not conn.closed:
                conn.autocommit = False

    def full_reset(self, conn: Any) -> None:
        if _status(conn) == IN_TRANSACTION:
            conn.rollback()
        self._in_autocommit(conn, "DISCARD ALL")

    def ping(self, conn: Any) -> None:
        self._in_autocommit(conn, "")

    def end_block(self, conn: Any, failed: bool) -> None:
        if _needs_end(conn):
            (conn.rollback if failed else conn.commit)()

    def undo(self, conn: Any, undo: list[Any]) -> None:
        _undo(conn, undo)
