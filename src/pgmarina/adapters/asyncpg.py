"""asyncpg adapter.

asyncpg tracks the transaction status from every ReadyForQuery message and
knows when a cancelled query's cancellation is still in flight, so the
release path can decide locally whether a round trip is needed at all.
Listeners a borrower adds are noted by :class:`AsyncpgLease` and removed on
release, because a callback left behind would fire in the next borrower's
program.

Prepared statements, cursors and transactions check on every use that the
connection was not "released back to the pool" since they were made, by
comparing a counter the connection carries (``_pool_release_ctr``, asyncpg's
own pool bumps it).  A lease that made any of them bumps it when it ends, so
they refuse to run in the next borrower's session; a lease that made none
leaves it alone and costs nothing.

Behind PgBouncer in transaction pooling mode (``pgbouncer=True``) the
statement cache is off (``statement_cache_size=0``).  asyncpg then prepares
each query as the unnamed statement and parses it again in the same message
as its Bind and Execute, so nothing outlives the round trip that ran it.  Its
type introspection (once per connection and new type) also runs as unnamed
statements, but asyncpg wraps it in ``set_config('jit', ...)`` calls that
would change the settings of whichever server sessions the bouncer picked:
the pool tells the connection that the server has no JIT, so it sends none.
A statement a borrower prepares itself (``conn.prepare()``) is named: it
works only within the transaction it was made in, and stays behind in that
server session, where another client preparing the same name fails.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .._lease import Lease, forward, set_made
from .._redact import scrub
from .base import (
    BROKEN,
    BUSY,
    CLEAN,
    IN_TRANSACTION,
    AsyncAdapter,
    bounded,
    rejected_for_good,
    reported_standby,
)

try:
    import asyncpg
    import asyncpg.connection

    # asyncpg's Connection counts instances of this marker class as
    # connections, which is how its own pool proxy passes isinstance().
    _PROXY_BASES: tuple[type, ...] = (asyncpg.connection._ConnectionProxy,)
except (ImportError, AttributeError):  # pragma: no cover - checked by adapters.resolve
    asyncpg = None
    _PROXY_BASES = ()

__all__ = ["AsyncpgAdapter", "AsyncpgLease"]


class AsyncpgLease(Lease, *_PROXY_BASES):  # type: ignore[misc]
    """Lease of an ``asyncpg.Connection`` that remembers listeners to remove
    and invalidates the statements, cursors and transactions made from it."""

    __slots__ = ()

    # ``_made`` is just True: the connection's counter does the bookkeeping.
    @staticmethod
    def _void(con: Any, made: Any) -> None:
        con._pool_release_ctr += 1

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        prepare = self._con.prepare  # raises once released
        set_made(self, True)
        return prepare(*args, **kwargs)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cursor = self._con.cursor
        set_made(self, True)
        return cursor(*args, **kwargs)

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        transaction = self._con.transaction
        set_made(self, True)
        return transaction(*args, **kwargs)

    async def add_listener(self, channel: str, callback: Any) -> None:
        await self._con.add_listener(channel, callback)
        self._note(("listener", channel, callback))

    def add_log_listener(self, callback: Any) -> None:
        self._con.add_log_listener(callback)
        self._note(("log", callback))

    def add_termination_listener(self, callback: Any) -> None:
        self._con.add_termination_listener(callback)
        self._note(("termination", callback))

    def add_query_logger(self, callback: Any) -> None:
        self._con.add_query_logger(callback)
        self._note(("query", callback))


forward(
    AsyncpgLease,
    *("fetch", "fetchval", "fetchrow", "fetchmany", "execute", "executemany"),
)


def without_session_settings(conn: Any) -> None:
    """Keep asyncpg from changing session settings around its introspection.

    Before introspecting types asyncpg turns JIT off with a session-level
    ``set_config`` and afterwards puts it back, three statements apart.
    Through a transaction-mode bouncer they may each run in another server
    session and leave those changed for other clients.  asyncpg reads the
    server's capabilities once, at connect; saying "no JIT" there skips both.
    """
    caps = getattr(conn, "_server_caps", None)
    if caps is not None and getattr(caps, "jit", False):
        conn._server_caps = caps._replace(jit=False)


class _Forward:
    """asyncpg's listener callback, forwarding to the pgmarina listener's
    ``deliver``; equal to any other made for the same ``deliver``."""

    __slots__ = ("deliver",)

    def __init__(self, deliver: Callable[[str, str, int], None]) -> None:
        self.deliver = deliver

    def __call__(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.deliver(channel, payload, pid)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Forward) and other.deliver == self.deliver

    def __hash__(self) -> int:
        return hash(self.deliver)


async def _nothing() -> None:
    pass


def _simple_query(conn: Any, query: str, timeout: float | None) -> Any:
    """``conn.execute(query, timeout=timeout)`` for a query without arguments.

    What ``Connection.execute`` awaits, without its frame (measured: 1.4 % of
    a full-reset cycle); through it when it has more to do: log the query
    for its query loggers, or refuse a connection it closed.
    """
    if conn._query_loggers or conn._aborted:
        return conn.execute(query, timeout=timeout)
    return conn._protocol.query(query, timeout)


def _is_closed(conn: Any) -> bool:
    # Connection.is_closed()'s own test, without the method call: once per
    # checkout (what _status reads too).
    return bool(conn._aborted or not conn._protocol.is_connected())


def _status(conn: Any) -> int:
    proto = conn._protocol
    if proto is None or conn._aborted or not proto.is_connected():
        return BROKEN
    if proto._is_cancelling():
        return BUSY
    if proto.is_in_transaction() or conn._top_xact is not None:
        return IN_TRANSACTION
    return CLEAN


class AsyncpgAdapter(AsyncAdapter):
    """Connects with ``asyncpg.connect(dsn, **kwargs)``."""

    name = "asyncpg"
    lease_class = AsyncpgLease
    # asyncpg's socket belongs to the event loop (a transport): terminate()
    # aborts it, and the query in flight fails with ConnectionDoesNotExistError.
    terminate_interrupts = True
    status = staticmethod(_status)
    quick_status = staticmethod(_status)

    def pgbouncer_kwargs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        size = kwargs.get("statement_cache_size", 0)
        if size != 0:
            raise ValueError(
                f"statement_cache_size={size!r} conflicts with pgbouncer=True: in transaction "
                "pooling the statements asyncpg caches by name are missing from the next "
                "transaction's server session (leave statement_cache_size out; the pool sets 0)"
            )
        return {**kwargs, "statement_cache_size": 0}

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        try:
            inspect.signature(asyncpg.connect).bind(dsn, **kwargs)
        except TypeError as exc:
            raise TypeError(f"connect keyword not accepted by asyncpg.connect(): {exc}") from None

    async def connect(self, dsn: str | None, kwargs: Mapping[str, Any]) -> Any:
        try:
            conn = await asyncpg.connect(dsn, **kwargs)
        except ValueError as exc:
            # asyncpg parses the DSN only now, and its complaint can quote a piece of
            # it: with a "/" typed into a password, the password is read as the port
            # ("invalid literal for int() with base 10: '<password>'").  A TLS
            # error is a ValueError too, but an OSError as well, and says nothing
            # of the arguments: it goes on as it is.
            if isinstance(exc, OSError):
                raise
            problem = scrub(str(exc), dsn, kwargs)
        else:
            if self.pgbouncer:
                without_session_settings(conn)
            return conn
        # Raised here, outside the except, so the original is not its __context__.
        raise ValueError(f"asyncpg cannot use the connect arguments: {problem}")

    # Asked on every checkout: asyncpg's own test, with no method call.
    is_closed = staticmethod(_is_closed)

    def terminate(self, conn: Any) -> None:
        conn.terminate()

    def is_permanent(self, exc: BaseException) -> bool:
        # asyncpg speaks the protocol itself and keeps the login error's SQLSTATE.
        return isinstance(exc, asyncpg.PostgresError) and rejected_for_good(exc.sqlstate, "")

    async def close(self, conn: Any, timeout: float) -> None:
        await conn.close(timeout=timeout)

    async def settle(self, conn: Any, timeout: float) -> bool:
        try:
            await conn._protocol._wait_for_cancellation(timeout)
        except TimeoutError:
            return False
        return not conn.is_closed()

    # rollback and full_reset are plain functions that return asyncpg's own
    # coroutine: an ``async def`` here would add a frame to every reset, and
    # its creation and every resume through it (measured on the release path).

    def rollback(self, conn: Any, timeout: float | None) -> Any:
        # The Transaction object a borrower abandoned is dead either way.
        conn._top_xact = None
        return _simple_query(conn, "ROLLBACK", timeout)

    def full_reset(self, conn: Any, timeout: float | None) -> Any:
        # What Connection.reset() does, in one round trip: a pending ROLLBACK
        # rides in the same simple-query message as the reset query, and the
        # driver's own timeout (or none: see terminate_interrupts) replaces a
        # separate timeout context.
        conn._listeners.clear()
        conn._log_listeners.clear()
        # Behind PgBouncer the session is not ours past the transaction.
        query = "" if self.pgbouncer else conn.get_reset_query()
        if conn._protocol.is_in_transaction() or conn._top_xact is not None:
            return self._reset_open_transaction(conn, query, timeout)
        if not query:  # a server without any of the features reset (asyncpg asks it)
            return _nothing()
        return _simple_query(conn, query, timeout)

    def _reset_open_transaction(self, conn: Any, query: str, timeout: float | None) -> Any:
        """``full_reset`` of a connection left in a transaction, after its
        listeners are cleared: the ROLLBACK rides in the same message as the
        reset ``query``."""
        conn._top_xact = None
        return _simple_query(conn, f"ROLLBACK;\n{query}", timeout)

    async def ping(self, conn: Any, timeout: float) -> None:
        await conn.execute("SELECT 1", timeout=timeout)

    # LISTEN/NOTIFY: asyncpg reads the socket itself and calls back; the
    # callback object must compare equal to itself for remove_listener.

    async def listen(
        self, conn: Any, channel: str, deliver: Callable[[str, str, int], None], timeout: float
    ) -> None:
        await bounded(conn.add_listener(channel, _Forward(deliver)), timeout)

    async def unlisten(
        self, conn: Any, channel: str, deliver: Callable[[str, str, int], None], timeout: float
    ) -> None:
        await bounded(conn.remove_listener(channel, _Forward(deliver)), timeout)

    def on_lost(self, conn: Any, callback: Callable[[], None]) -> None:
        conn.add_termination_listener(lambda _conn: callback())

    async def wait_notifications(
        self, conn: Any, deliver: Callable[[str, str, int], None], seconds: float
    ) -> None:
        # Notifications arrive through the listeners; a loss through on_lost.
        await asyncio.sleep(seconds)
    async def in_recovery(self, conn: Any) -> bool:
        standby = reported_standby(getattr(conn.get_settings(), "in_hot_standby", None))
        if standby is None:  # before PostgreSQL 14
            standby = bool(await conn.fetchval("SELECT pg_is_in_recovery()"))
        return standby

    async def undo(self, conn: Any, undo: list[Any]) -> None:
        for item in reversed(undo):
            kind = item[0]
            if kind == "listener":
                await conn.remove_listener(item[1], item[2])
            elif kind == "log":
                conn.remove_log_listener(item[1])
            elif kind == "termination":
                conn.remove_termination_listener(item[1])
            elif kind == "query":
                conn.remove_query_logger(item[1])
