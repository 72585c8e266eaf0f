"""psycopg 3 adapters, for ``AsyncPool(driver="psycopg")`` and ``Pool(driver="psycopg")``.

psycopg keeps libpq's transaction status locally (``pgconn.transaction_status``),
so release decides without a round trip whether a ROLLBACK is due.  Following
psycopg's own convention, ``pool.connection()`` commits when the block ends
normally and rolls back when it raises, unless the connection is in
autocommit.  Pings run in autocommit for a moment, so a health check never
leaves a transaction open behind it.

psycopg keeps ``autocommit``, ``isolation_level``, ``read_only``,
``deferrable``, the row and cursor factories and the prepare settings on
the connection object, not in the server session, so no reset query can
undo them.  :class:`PsycopgLease` notes their values before a borrower's
first change and the pool puts them back on release: a borrower's
``autocommit = True`` must not turn the next borrower's ``with`` block into
a series of commits, nor its ``row_factory`` change the next one's rows.
Cursors made from a lease are closed when it ends, and a ``transaction()``
or ``pipeline()`` block refuses to begin after it.

Keywords ``connection_class`` (a ``psycopg.Connection``/``AsyncConnection``
subclass), ``autocommit``, ``prepare_threshold``, ``row_factory``,
``cursor_factory`` and ``context`` go to ``connect()`` as psycopg takes them;
all other keywords are libpq connection parameters and are checked up front.

Behind PgBouncer in transaction pooling mode (``pgbouncer=True``) psycopg
never prepares a named statement (``prepare_threshold=None``: each query is
parsed again in the same message as its Bind and Execute), and a full reset
only rolls back, sending no ``DISCARD ALL``.  A borrower who asks for a
prepared statement anyway (``execute(..., prepare=True)``, or a
``prepare_threshold`` set on the lease) gets a named one, which works only
within its transaction and stays behind in that server session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from operator import attrgetter, methodcaller
from types import TracebackType
from typing import Any
from weakref import ref

from .._lease import Lease, close_tracked, forward, set_made, track
from .._redact import scrub
from .base import (
    BROKEN,
    BUSY,
    CLEAN,
    IN_TRANSACTION,
    AsyncAdapter,
    SyncAdapter,
    bounded,
    conninfo_complaint,
    rejected_for_good,
    reported_standby,
    shutdown_socket,
    with_connect_timeout,
)

try:
    import psycopg
    from psycopg import pq
except ImportError:  # pragma: no cover - checked by adapters.resolve
    psycopg = None  # type: ignore[assignment]

__all__ = ["AsyncPsycopgAdapter", "AsyncPsycopgLease", "PsycopgAdapter", "PsycopgLease"]

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


def _listen_query(verb: str, channel: str) -> Any:
    """``LISTEN "channel"`` (or ``UNLISTEN``), the name quoted by psycopg."""
    from psycopg import sql

    return sql.SQL(verb + " {}").format(sql.Identifier(channel))


def _status(conn: Any) -> int:
    # libpq reports UNKNOWN for a closed or failed connection: BROKEN.
    return _STATUS.get(conn.pgconn.transaction_status, BROKEN)


def _validate(dsn: str | None, kwargs: Mapping[str, Any], base: type) -> None:
    cls = kwargs.get("connection_class", base)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"connection_class must be a subclass of {base.__qualname__}, not {cls!r}")
    params = {k: v for k, v in kwargs.items() if k not in _CONNECT_OPTIONS | {"connection_class"}}
    problem = _conninfo_problem(dsn or "", {})
    if problem is not None:
        raise ValueError(f"dsn is not a valid connection string: {scrub(problem, dsn, kwargs)}")
    problem = _conninfo_problem(dsn or "", params)
    if problem is not None:
        raise TypeError(f"connect keywords rejected by libpq: {scrub(problem, dsn, kwargs)}")


def _conninfo_problem(dsn: str, params: Mapping[str, Any]) -> str | None:
    """libpq's complaint about ``dsn`` plus ``params``, if it has one.

    Returned, not raised: the pool's own error is raised outside the
    ``except`` so it carries no context, for libpq's text may quote a
    password (the caller scrubs it).
    """
    try:
        psycopg.conninfo.make_conninfo(dsn, **params)
    except psycopg.ProgrammingError as exc:
        return str(exc).strip()
    return None


def _pgbouncer_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    threshold = kwargs.get("prepare_threshold")
    if threshold is not None:
        raise ValueError(
            f"prepare_threshold={threshold!r} conflicts with pgbouncer=True: in transaction "
            "pooling the statements psycopg prepares by name are missing from the next "
            "transaction's server session (leave prepare_threshold out; the pool sets None)"
        )
    return {**kwargs, "prepare_threshold": None}


def _connect_args(kwargs: Mapping[str, Any], base: type) -> tuple[Any, dict[str, Any]]:
    rest = dict(kwargs)
    return rest.pop("connection_class", base), rest


# libpq's own transaction status, read without a Python frame on every
# release: its IDLE is 0, which is CLEAN (checked when the table is built).
_libpq_status: Callable[[Any], int] = attrgetter("pgconn.transaction_status")

# Checked on every checkout, so read without a Python frame: libpq's status
# is CONNECTION_OK (0) for a usable connection, CONNECTION_BAD once closed.
_closed: Callable[[Any], bool] = attrgetter("pgconn.status")


# What psycopg keeps on the connection object and a borrower may assign.
# An AsyncConnection takes the first four only through its set_*() methods.
_CHARACTERISTICS = ("autocommit", "isolation_level", "read_only", "deferrable")
_KEPT = (
    *_CHARACTERISTICS,
    *("row_factory", "cursor_factory", "server_cursor_factory"),
    *("prepare_threshold", "prepared_max"),
)
_KEPT_NAMES = frozenset(_KEPT)
# All of them as one tuple, read with no Python frame.
_kept_of: Callable[[Any], tuple[Any, ...]] = attrgetter(*_KEPT)


# psycopg's own "non-blocking part of closing", the same for sync and async
# cursors (an async cursor's public close() would need awaiting).
_shut = methodcaller("_close")


def _keep_attributes(lease: Lease) -> None:
    # Called before each change: only the first one's "before" is kept, which
    # is what the lease started with and so what its release restores.
    undo = lease._undo
    if undo is None or not any(item[0] == "attributes" for item in undo):
        lease._note(("attributes", _kept_of(lease._con)))


class PsycopgLease(Lease):
    """Lease of a ``psycopg.Connection``.

    Notes the notify/notice handlers a borrower adds and the connection
    attributes it changes, so that the release can undo them, and keeps
    track of the cursors made from it, so that the release can close them.
    """

    __slots__ = ()

    @staticmethod
    def _void(con: Any, made: Any) -> None:
        if made:  # empty when every cursor was dropped already, the common case
            close_tracked(made, _shut)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _KEPT_NAMES:
            _keep_attributes(self)
        Lease.__setattr__(self, name, value)

    def set_autocommit(self, value: bool) -> Any:
        _keep_attributes(self)
        return self._con.set_autocommit(value)

    def set_isolation_level(self, value: Any) -> Any:
        _keep_attributes(self)
        return self._con.set_isolation_level(value)

    def set_read_only(self, value: bool | None) -> Any:
        _keep_attributes(self)
        return self._con.set_read_only(value)

    def set_deferrable(self, value: bool | None) -> Any:
        _keep_attributes(self)
        return self._con.set_deferrable(value)

    def add_notify_handler(self, callback: Any) -> None:
        self._con.add_notify_handler(callback)
        self._note(("notify", callback))

    def add_notice_handler(self, callback: Any) -> None:
        self._con.add_notice_handler(callback)
        self._note(("notice", callback))

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cur = self._con.cursor(*args, **kwargs)
        if kwargs.get("withhold"):
            # A WITH HOLD cursor outlives the transaction on the server:
            # closing it is a round trip, so it is left to the slow release.
            self._note(("cursor", cur))
            return cur
        return track(self, cur)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        # track(), inline: psycopg makes a cursor on every execute().
        cur = self._con.execute(*args, **kwargs)
        made = self._made
        if made is None:
            made = set()
            set_made(self, made)
        made.add(ref(cur, made.discard))
        return cur

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        return _Block(self, "transaction", args, kwargs)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        return _Block(self, "pipeline", args, kwargs)


class AsyncPsycopgLease(PsycopgLease):
    """Lease of a ``psycopg.AsyncConnection``; see :class:`PsycopgLease`."""

    __slots__ = ()

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        cur = await self._con.execute(*args, **kwargs)
        made = self._made
        if made is None:
            made = set()
            set_made(self, made)
        made.add(ref(cur, made.discard))
        return cur


forward(PsycopgLease, "commit", "rollback")


class _Block:
    """``lease.transaction()`` or ``lease.pipeline()``: psycopg's block, begun
    only if the lease is still live.

    psycopg sends nothing until such a block is entered, so one made under a
    lease and entered after its release would open a transaction (or enter
    pipeline mode) in the next borrower's session.
    """

    __slots__ = ("_args", "_block", "_kwargs", "_lease", "_method")

    def __init__(
        self, lease: Lease, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._lease = lease
        self._method = method
        self._args = args
        self._kwargs = kwargs
        self._block: Any = None

    def _open(self) -> Any:
        # ``_con`` is RELEASED once the lease is over: this raises there.
        block = getattr(self._lease._con, self._method)(*self._args, **self._kwargs)
        self._block = block
        return block

    def __enter__(self) -> Any:
        return self._open().__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        return self._block.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Any:
        return await self._open().__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        return await self._block.__aexit__(exc_type, exc, tb)


def _undo(conn: Any, undo: list[Any]) -> None:
    # Runs after the pool's rollback.  A connection still in a transaction
    # here (reset=None) is discarded by the pool, and psycopg would refuse
    # the attribute changes: only the handlers are due.
    idle = _status(conn) == CLEAN
    for item in reversed(undo):
        kind = item[0]
        if kind == "notify":
            conn.remove_notify_handler(item[1])
        elif kind == "notice":
            conn.remove_notice_handler(item[1])
        elif kind == "cursor" and idle:
            item[1].close()  # a WITH HOLD cursor: CLOSE on the server
        elif kind == "attributes" and idle:
            for name, value in zip(_KEPT, item[1], strict=True):
                if getattr(conn, name) != value:
                    setattr(conn, name, value)


async def _async_undo(conn: Any, undo: list[Any]) -> None:
    # See _undo; an AsyncConnection takes these changes only by method.
    idle = _status(conn) == CLEAN
    for item in reversed(undo):
        kind = item[0]
        if kind == "notify":
            conn.remove_notify_handler(item[1])
        elif kind == "notice":
            conn.remove_notice_handler(item[1])
        elif kind == "cursor" and idle:
            await item[1].close()
        elif kind == "attributes" and idle:
            for name, value in zip(_KEPT, item[1], strict=True):
                if getattr(conn, name) == value:
                    continue
                if name in _CHARACTERISTICS:
                    await getattr(conn, f"set_{name}")(value)
                else:
                    setattr(conn, name, value)


def _needs_end(conn: Any) -> bool:
    # A closed connection reads as BROKEN, so this is False for it too.
    return _status(conn) == IN_TRANSACTION and not conn.autocommit


# Where psycopg's own frames come from (NUL: no file name starts with it).
_PSYCOPG_DIR = os.path.dirname(psycopg.__file__) + os.sep if psycopg is not None else "\0"


def _let_go_of_half_made(exc: BaseException) -> None:
    """Let a failed connect's half-made connection go now, not at the next collection.

    When a connect fails part-way (timed out, or cancelled by the pool's
    ``connect_timeout``), psycopg leaves its libpq connection, socket included,
    in the locals of its own frames, to be closed when those are collected.  But
    the error's traceback keeps those frames alive, and the pool keeps the error
    (the ``__cause__`` of its callers' errors), and so does anyone who holds one
    of those: the socket stayed open, and the server's backend with it.  So the
    locals of psycopg's frames in the error's traceback (and its causes') are
    cleared; those frames have all ended, since the error came out of them.  The
    traceback itself stays, lines and all.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_filename.startswith(_PSYCOPG_DIR):
                with contextlib.suppress(RuntimeError):  # still running: not ours to clear
                    frame.clear()
            tb = tb.tb_next
        todo += [e for e in (error.__cause__, error.__context__) if e is not None]


def _complaint(exc: BaseException, dsn: str | None, kwargs: Mapping[str, Any]) -> str | None:
    if not isinstance(exc, psycopg.OperationalError):
        return None
    return conninfo_complaint(str(exc), dsn, kwargs)


def _is_permanent(exc: BaseException) -> bool:
    # libpq reports a failed login with the server's message and no SQLSTATE.
    return isinstance(exc, psycopg.OperationalError) and rejected_for_good(exc.sqlstate, str(exc))


class AsyncPsycopgAdapter(AsyncAdapter):
    """``psycopg.AsyncConnection`` for :class:`~pgmarina.AsyncPool`."""

    name = "psycopg"
    lease_class = AsyncPsycopgLease
    transactional_context = True
    status = staticmethod(_status)
    quick_status = staticmethod(_libpq_status)  # type: ignore[assignment]  # a C getter

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        _validate(dsn, kwargs, psycopg.AsyncConnection)

    def pgbouncer_kwargs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return _pgbouncer_kwargs(kwargs)

    async def connect(self, dsn: str | None, kwargs: Mapping[str, Any]) -> Any:
        cls, rest = _connect_args(kwargs, psycopg.AsyncConnection)
        try:
            return await cls.connect(dsn or "", **rest)
        except BaseException as exc:
            _let_go_of_half_made(exc)
            problem = _complaint(exc, dsn, kwargs)
            if problem is None:
                raise
        raise ValueError(f"libpq cannot use the connection string: {problem}")

    is_closed = staticmethod(_closed)  # type: ignore[assignment]  # a C getter, no frame

    def terminate(self, conn: Any) -> None:
        _cut_off(conn)

    is_permanent = staticmethod(_is_permanent)

    async def close(self, conn: Any, timeout: float) -> None:
        if conn.lock.locked():  # cut off while in use: finished once psycopg lets go
            _cut_off(conn)
            return
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
        if not self.pgbouncer:  # behind PgBouncer the session is not ours to reset
            await _bounded_io(conn, self._in_autocommit(conn, "DISCARD ALL"), timeout)

    async def ping(self, conn: Any, timeout: float) -> None:
        await _bounded_io(conn, self._in_autocommit(conn, ""), timeout)

    async def in_recovery(self, conn: Any) -> bool:
        standby = reported_standby(conn.info.parameter_status("in_hot_standby"))
        if standby is None:  # before PostgreSQL 14
            was = conn.autocommit
            await conn.set_autocommit(True)
            try:
                cur = await conn.execute("SELECT pg_is_in_recovery()")
                standby = bool((await cur.fetchone())[0])
            finally:
                if not conn.closed:
                    await conn.set_autocommit(was)
        return standby

    async def end_block(self, conn: Any, failed: bool) -> None:
        if _needs_end(conn):
            await (conn.rollback() if failed else conn.commit())

    async def undo(self, conn: Any, undo: list[Any]) -> None:
        await _async_undo(conn, undo)

    # LISTEN/NOTIFY: the listener's connection stays in autocommit, so that
    # each LISTEN takes effect at once; notifies() keeps what arrives while it
    # is not running (psycopg's backlog) for its next run.

    async def listen(
        self, conn: Any, channel: str, deliver: Callable[[str, str, int], None], timeout: float
    ) -> None:
        if not conn.autocommit:
            await conn.set_autocommit(True)
        await _bounded_io(conn, conn.execute(_listen_query("LISTEN", channel)), timeout)

    async def unlisten(
        self, conn: Any, channel: str, deliver: Callable[[str, str, int], None], timeout: float
    ) -> None:
        await _bounded_io(conn, conn.execute(_listen_query("UNLISTEN", channel)), timeout)

    async def wait_notifications(
        self, conn: Any, deliver: Callable[[str, str, int], None], seconds: float
    ) -> None:
        async for note in conn.notifies(timeout=seconds):
            deliver(note.channel, note.payload, note.pid)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


# Tasks that finish connections once psycopg lets go of their sockets.
_finishing: set[asyncio.Task[None]] = set()


def _cut_off(conn: Any) -> None:
    """Close ``conn`` at once, without pulling its socket from under the loop.

    While a psycopg operation runs (it holds ``conn.lock``), its socket is
    registered with the event loop.  Closing the descriptor then would let
    the next socket opened in this loop reuse its number while the loop
    still tracks the old registration, and that socket's IO would fail
    (``FileNotFoundError``), even in code that has nothing to do with the
    pool.  So the socket is shut down instead, which makes the operation
    fail promptly and unregister, and the connection is finished once the
    operation has let go of the lock.
    """
    pgconn = conn.pgconn
    if not conn.lock.locked():
        pgconn.finish()
        return
    try:
        loop = asyncio.get_running_loop()
        fd = pgconn.socket
    except (RuntimeError, psycopg.Error):
        pgconn.finish()  # no loop to watch it, or already gone
        return
    shutdown_socket(fd)
    task = loop.create_task(_finish_when_free(conn))
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)


async def _finish_when_free(conn: Any) -> None:
    try:
        await asyncio.wait_for(conn.lock.acquire(), 10.0)
    except asyncio.TimeoutError:  # pragma: no cover - psycopg ignored the shutdown
        pass
    else:
        conn.lock.release()
    conn.pgconn.finish()


async def _bounded_io(conn: Any, aw: Awaitable[Any], timeout: float) -> Any:
    """Run one IO step on ``conn``, cutting the connection off if it overruns.

    Cancelling psycopg mid-query makes it send a cancel request and wait for
    the server, which on a dead network never answers.  So on timeout (or if
    the caller is cancelled) the connection is cut off (see :func:`_cut_off`):
    the step then fails at once on its own, and is left to finish alone.
    """
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except BaseException:
        _abandon(conn, task)
        raise
    if not done:
        _abandon(conn, task)
        raise TimeoutError(f"gave up after {timeout:g}s; connection cut off")
    return task.result()


def _abandon(conn: Any, task: asyncio.Future[Any]) -> None:
    if not conn.lock.locked():
        # The step has not started: it must never run on the finished
        # connection (psycopg's rollback does not check for one).
        task.cancel()
    _cut_off(conn)
    task.add_done_callback(_consume)


class PsycopgAdapter(SyncAdapter):
    """``psycopg.Connection`` for the thread :class:`~pgmarina.Pool`."""

    name = "psycopg"
    lease_class = PsycopgLease
    transactional_context = True
    status = staticmethod(_status)
    quick_status = staticmethod(_libpq_status)  # type: ignore[assignment]  # a C getter

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        _validate(dsn, kwargs, psycopg.Connection)

    def pgbouncer_kwargs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return _pgbouncer_kwargs(kwargs)

    def connect(self, dsn: str | None, kwargs: Mapping[str, Any], timeout: float) -> Any:
        cls, rest = _connect_args(with_connect_timeout(dsn, kwargs, timeout), psycopg.Connection)
        try:
            return cls.connect(dsn or "", **rest)
        except BaseException as exc:
            _let_go_of_half_made(exc)
            problem = _complaint(exc, dsn, kwargs)
            if problem is None:
                raise
        raise ValueError(f"libpq cannot use the connection string: {problem}")

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
        if not self.pgbouncer:  # behind PgBouncer the session is not ours to reset
            self._in_autocommit(conn, "DISCARD ALL")

    def ping(self, conn: Any) -> None:
        self._in_autocommit(conn, "")

    def in_recovery(self, conn: Any) -> bool:
        standby = reported_standby(conn.info.parameter_status("in_hot_standby"))
        if standby is None:  # before PostgreSQL 14
            was = conn.autocommit
            conn.autocommit = True
            try:
                standby = bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])
            finally:
                if not conn.closed:
                    conn.autocommit = was
        return standby

    def end_block(self, conn: Any, failed: bool) -> None:
        if _needs_end(conn):
            (conn.rollback if failed else conn.commit)()

    def undo(self, conn: Any, undo: list[Any]) -> None:
        _undo(conn, undo)

    def listen(self, conn: Any, channel: str) -> None:
        conn.autocommit = True
        conn.execute(_listen_query("LISTEN", channel))

    def unlisten(self, conn: Any, channel: str) -> None:
        conn.execute(_listen_query("UNLISTEN", channel))

    def drain_notifications(self, conn: Any, deliver: Callable[[str, str, int], None]) -> None:
        # timeout=0: what the backlog and the socket hold now, no wait.
        for note in conn.notifies(timeout=0):
            deliver(note.channel, note.payload, note.pid)
