"""asyncpg's pool API on pgmarina: change one import, keep the code.

::

    # was: from asyncpg import create_pool
    from pgmarina.compat.asyncpg import create_pool

    async with create_pool(dsn, min_size=2, max_size=10) as pool:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

This module translates; it decides nothing.  Every rule (who gets a
connection, when one is opened, reset, retired or closed) is pgmarina's
:class:`~pgmarina.AsyncPool` and its core.  What it maps, their name on the
left, our call on the right:

=====================================  ==============================================
``create_pool(dsn, ...)`` / ``Pool``   ``AsyncPool(dsn, driver=...)``, with this
                                       module's adapter
``await pool`` / ``async with pool``   ``open(wait=True)`` with ``init_size`` as
                                       the floor, then
                                       ``resize(min_size, max_size)``
``min_size`` / ``max_size``            the same
``init_size``                          connections opened at start (default
                                       ``min_size``)
``max_queries``                        ``max_uses``: counted in leases, not queries
``max_inactive_connection_lifetime``   ``max_idle`` (``0``: ``None``), which closes
                                       idle connections above ``min_size`` as
                                       asyncpg 0.32 does; housekeeping runs at
                                       least 4 times as often
``connect``                            the adapter's connect
``init``                               ``configure``, with
                                       ``configure_fails_waiter=True``: an
                                       ``init`` that raises fails the acquire
                                       that has waited longest, with its error
``setup``                              run on each lease before ``acquire``
                                       returns it; if it fails the connection is
                                       replaced
``reset=None`` / ``reset=coroutine``   ``reset="full"`` (``Connection.reset()``'s
                                       query, or its own if a class overrides
                                       it) / ``reset=coroutine`` after the
                                       rollback; one whose body does nothing:
                                       ``reset="auto"`` (the rollback alone)
``acquire(timeout=)``                  ``acquire(timeout=)`` (``None``: no limit)
``release(conn, timeout=)``            the lease's end; a reset the caller waits
                                       for is bounded by ``timeout``, raises its
                                       error, and survives the caller's
                                       cancellation
``close()``                            ``close(timeout=None)``, logging a warning
                                       after 60 s
``terminate()`` / ``expire_...()``     ``terminate()`` / ``expire()``
``set_connect_args()``                 the next connects' arguments
``get_size()`` / ``get_idle_size()``   ``stats()``: open connections / idle ones
``PoolTimeout``                        a ``TimeoutError`` already, as asyncpg's
``PoolClosed``, use before ``await``   ``asyncpg.InterfaceError``
``PoolConnectError``                   the driver's own error (a copy), chained to
                                       ours
use of a released connection           ``asyncpg.InterfaceError``
(an acquire fails with its connect)    ``fail_fast_waiters=True``: queued acquires
                                       fail once connects have failed
                                       ``fail_fast_after``
(no connect timeout of the pool's)     ``connect_timeout=inf``: asyncpg.connect's
                                       own
=====================================  ==============================================

Keywords that are pgmarina settings asyncpg has no word for
(``max_lifetime``, ``fail_fast_after``, ``check_window``, ``keepalive``,
``reset_timeout``, ``connect_timeout``, ``max_waiting``, ``name``, …, see
:data:`PGMARINA_SETTINGS`) go to the pool; every other keyword goes to the
connect, as with asyncpg.
"""

from __future__ import annotations

import asyncio
import copy
import dis
import inspect
import logging
from _thread import get_ident as _thread_ident
from asyncio import get_running_loop as _running_loop
from collections.abc import Awaitable, Callable, Generator, Mapping
from time import monotonic
from types import FunctionType
from typing import Any

import asyncpg
import asyncpg.connection
from asyncpg import InterfaceError

from .._core import PoolStats
from .._core.config import seconds as _seconds
from .._core.entry import IN_USE
from .._lease import ClosedStandIn, set_con, stand_in
from ..adapters.asyncpg import AsyncpgAdapter, AsyncpgLease, without_session_settings
from ..adapters.base import bounded
from ..errors import PoolClosed, PoolConnectError, PoolError, PoolTimeout
from ..shells.aio import AsyncPool

__all__ = ["PGMARINA_SETTINGS", "Pool", "PoolAcquireContext", "PoolConnectionProxy", "create_pool"]

logger = logging.getLogger("pgmarina.compat.asyncpg")

#: pgmarina settings that may be passed as keywords beside asyncpg's own;
#: asyncpg's connect takes none of these names.  (``timeout`` stays the
#: connect timeout it is in asyncpg.)
PGMARINA_SETTINGS = frozenset({
    "backoff_initial", "backoff_max", "check", "check_window", "configure_fails_waiter",
    "connect_timeout", "fail_fast_after", "fail_fast_waiters", "housekeeping_interval",
    "keepalive", "lifetime_jitter",
    "max_connecting", "max_lifetime", "max_waiting", "name", "reconnect_failed",
    "reconnect_timeout", "reset_timeout",
    "pgbouncer",  # PgBouncer (Scale-out issue)
})

# asyncpg's create_pool defaults, written once: create_pool and Pool show them.
_MIN_SIZE = 10
_MAX_SIZE = 10
_MAX_QUERIES = 50000
_MAX_INACTIVE = 300.0
#: How long close() may wait for leases before it says so in the log.
_CLOSE_WARN_AFTER = 60.0
# Python 3.10's asyncio.TimeoutError is not the builtin one PoolTimeout derives from.
_TIMEOUT_IS_ASYNCIOS = issubclass(PoolTimeout, asyncio.TimeoutError)


def _released(name: str, setting: bool) -> BaseException:
    what = f"set Connection.{name}" if setting else f"call Connection.{name}()"
    error: BaseException = InterfaceError(
        f"cannot {what}: connection has been released back to the pool"
    )
    return error


_CONNECTION_RESET = asyncpg.connection.Connection.reset

#: What a released proxy holds in place of its connection.
_GONE: Any = stand_in(_released)
_blank = object.__new__


class PoolConnectionProxy(AsyncpgLease):
    """What ``acquire()`` hands out: a pgmarina lease that speaks asyncpg.

    It is an ``asyncpg.Connection`` to ``isinstance`` (and an instance of
    ``connection_class``), forwards every method, and once released raises
    ``asyncpg.InterfaceError`` on any use, as asyncpg's proxy does.  Closing
    or terminating it releases it at once, so the pool replaces the
    connection without waiting for ``release()``.
    """

    __slots__ = ()

    async def close(self, *, timeout: float | None = None) -> None:
        """Close the server connection and give the proxy back to the pool, as asyncpg does.

        The pool replaces the connection; the proxy refuses use from then on.

        Args:
            timeout: Bound on the graceful close, as in ``asyncpg.Connection.close``.
        """
        con = self._con  # raises once released
        try:
            await con.close(timeout=timeout)
        finally:
            if self._con is con and type(con) is not ClosedStandIn:  # not released meanwhile
                _end(self)

    def terminate(self) -> None:
        """Cut the server connection off and give the proxy back to the pool, as asyncpg does."""
        con = self._con
        con.terminate()
        if self._con is con and type(con) is not ClosedStandIn:
            _end(self)

    def __repr__(self) -> str:
        if self.released:
            return f"<PoolConnectionProxy [released] {id(self):#x}>"
        return f"<PoolConnectionProxy {self._con!r} {id(self):#x}>"


def _end(lease: PoolConnectionProxy, timeout: float | None = None,
         peer: bool = False) -> Awaitable[None] | None:
    """End ``lease`` through its pool; returns the reset to await, if any."""
    reset = lease._pool._return(lease, None, timeout, peer)
    set_con(lease, _GONE)
    return reset  # type: ignore[no-any-return]


# What a coroutine function whose body does nothing (``pass``, ``...``, a
# docstring, ``return None``) compiles to, past its prologue: load a constant
# and return it (one instruction from Python 3.12 on).
_PROLOGUE = frozenset({"RETURN_GENERATOR", "POP_TOP", "RESUME", "NOP", "CACHE"})
_RETURN_A_CONSTANT = (("LOAD_CONST", "RETURN_VALUE"), ("RETURN_CONST",))


def _does_nothing(hook: Any) -> bool:
    """Whether ``hook`` is an ``async def`` taking one argument whose body does nothing.

    That is asyncpg's documented way to turn its reset off (its
    ``reset=None`` means the default reset).  Calling such a hook on every
    release would only cost time: the pool skips it, with the same result.
    Only a plain function is judged, by its bytecode; anything else
    (a decorated or bound function, a callable object) is called as given.
    """
    if type(hook) is not FunctionType or not inspect.iscoroutinefunction(hook):
        return False
    try:
        inspect.signature(hook).bind(None)
    except TypeError:  # it cannot take the connection: let the call say so
        return False
    ops = tuple(
        i.opname for i in dis.get_instructions(hook.__code__) if i.opname not in _PROLOGUE
    )
    return ops in _RETURN_A_CONSTANT


class _NotAConnection(InterfaceError):  # type: ignore[misc]
    """A ``connect`` callback returned something else than a connection."""


class _Adapter(AsyncpgAdapter):
    """asyncpg as asyncpg's pool drives it: ``connect``, the connection and
    record classes, and asyncpg's own resets.  One per pool."""

    lease_class = PoolConnectionProxy

    def __init__(
        self, connect: Callable[..., Awaitable[Any]] | None,
        connection_class: type[Any], record_class: type[Any],
    ) -> None:
        self._connect = connect
        self._connection_class = connection_class
        self._classes = {"connection_class": connection_class, "record_class": record_class}

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        if self._connect is None:
            super().validate(dsn, {**kwargs, **self._classes})
            return
        try:
            sig = inspect.signature(self._connect)
        except (TypeError, ValueError):  # pragma: no cover - no signature to check
            return
        try:
            sig.bind(dsn, loop=None, **self._classes, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"connect keyword not accepted by the connect callback: {exc}"
            ) from None

    async def connect(self, dsn: str | None, kwargs: Mapping[str, Any]) -> Any:
        con = await self._connect_as_asked(dsn, kwargs)
        if self.pgbouncer:
            without_session_settings(con)
        return con

    async def _connect_as_asked(self, dsn: str | None, kwargs: Mapping[str, Any]) -> Any:
        if self._connect is None:
            return await asyncpg.connect(dsn, **self._classes, **kwargs)
        con = await self._connect(
            dsn, loop=asyncio.get_running_loop(), **self._classes, **kwargs
        )
        if not isinstance(con, self._connection_class):
            if isinstance(con, asyncpg.Connection):
                con.terminate()
            raise _NotAConnection(
                "expected pool connect callback to return an instance of "
                f"{_qualified(self._connection_class)!r}, got {_qualified(type(con))!r}"
            )
        return con

    def is_permanent(self, exc: BaseException) -> bool:
        # A callback returning the wrong thing does so every time: fail callers at once.
        return isinstance(exc, _NotAConnection) or super().is_permanent(exc)

    def full_reset(self, conn: Any, timeout: float | None) -> Any:
        # A plain function returning what to await, as the adapter's own: no
        # frame of ours on every release (the façade's default reset).
        if type(conn).reset is not _CONNECTION_RESET:
            return conn.reset(timeout=timeout)  # a connection_class's own: it decides
        # Connection.reset()'s query (get_reset_query(), which a class may
        # override) in one round trip, without its timeout context.
        return AsyncpgAdapter.full_reset(self, conn, timeout)

    async def _reset_open_transaction(
        self, conn: Any, query: str, timeout: float | None
    ) -> None:
        await self.rollback(conn, timeout)  # asyncpg's words on a transaction left open
        if query:
            await conn.execute(query, timeout=timeout)

    async def rollback(self, conn: Any, timeout: float | None) -> None:
        # asyncpg's own (with a custom reset): it reports a transaction left
        # open outside ``async with conn.transaction()`` to the loop's
        # exception handler, then rolls it back.
        own = getattr(conn, "_reset", None)
        if own is None:  # pragma: no cover - an asyncpg without it
            await super().rollback(conn, timeout)
        else:
            await bounded(own(), timeout)


def _qualified(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


class Pool:
    """A connection pool with asyncpg's API, run by pgmarina's :class:`~pgmarina.AsyncPool`.

    Make it with :func:`create_pool`.  Nothing connects until the pool is
    awaited or entered (``await pool``, ``async with pool``).  See the
    module docstring for how each argument maps, and the README's migration
    section for what differs from asyncpg's own pool.
    """

    __slots__ = (
        "__weakref__", "_closed", "_closing", "_init_size", "_initialized", "_initializing",
        "_max_size", "_min_size", "_pool", "_serving", "_setup",
    )

    def __init__(
        self,
        *connect_args: Any,
        init_size: int | None = None,
        min_size: int = _MIN_SIZE,
        max_size: int = _MAX_SIZE,
        max_queries: int = _MAX_QUERIES,
        max_inactive_connection_lifetime: float = _MAX_INACTIVE,
        connect: Callable[..., Awaitable[Any]] | None = None,
        setup: Callable[[Any], Awaitable[Any]] | None = None,
        init: Callable[[Any], Awaitable[Any]] | None = None,
        reset: Callable[[Any], Awaitable[Any]] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        connection_class: type[Any] = asyncpg.connection.Connection,
        record_class: type[Any] = asyncpg.Record,
        **connect_kwargs: Any,
    ) -> None:
        """Check the arguments (in asyncpg's words) and set the pool up.

        ``loop`` is accepted and ignored: the pool runs on the loop that
        awaits it.

        Raises:
            ValueError: a size, ``max_queries`` or the inactive lifetime is out
                of range.
            TypeError: an argument has the wrong type, or the connect does not
                take a keyword.
        """
        if len(connect_args) > 1:
            raise TypeError("Pool() takes the DSN as its only positional argument")
        dsn = connect_args[0] if connect_args else connect_kwargs.pop("dsn", None)
        max_size = _whole("max_size", max_size)
        min_size = _whole("min_size", min_size)
        if max_size <= 0:
            raise ValueError("max_size is expected to be greater than zero")
        if min_size < 0:
            raise ValueError("min_size is expected to be greater or equal to zero")
        if min_size > max_size:
            raise ValueError("min_size is greater than max_size")
        init_size = min_size if init_size is None else _whole("init_size", init_size)
        if init_size < 0:
            raise ValueError("init_size is expected to be greater or equal to zero")
        if init_size > max_size:
            raise ValueError("init_size is greater than max_size")
        if init_size < min_size:
            raise ValueError("init_size is smaller than min_size")
        if _whole("max_queries", max_queries) <= 0:
            raise ValueError("max_queries is expected to be greater than zero")
        try:
            max_idle = _seconds(
                "max_inactive_connection_lifetime", max_inactive_connection_lifetime
            )
        except ValueError:
            raise ValueError(
                "max_inactive_connection_lifetime is expected to be greater or equal to zero"
            ) from None
        for name, cls, base in (("connection_class", connection_class, asyncpg.Connection),
                                ("record_class", record_class, asyncpg.Record)):
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(
                    f"{name} is expected to be a subclass of asyncpg.{base.__name__}, "
                    f"got {cls!r}"
                )
        if setup is not None and not callable(setup):
            raise TypeError(f"setup must be callable or None, not {type(setup).__name__}")
        settings = {
            k: connect_kwargs.pop(k) for k in list(connect_kwargs) if k in PGMARINA_SETTINGS
        }
        if max_idle == 0 or max_idle == float("inf"):
            max_idle = None
        if max_idle is not None:
            # asyncpg times each idle connection; a sweep this often keeps
            # the limit within a quarter of itself.
            settings.setdefault("housekeeping_interval", max(0.01, min(1.0, max_idle / 4)))
        # asyncpg.connect's own timeout (60 s) bounds a connect, and nothing
        # bounds ``init``, as in asyncpg.
        settings.setdefault("connect_timeout", float("inf"))
        # asyncpg fails an acquire with the error of the connect it needed;
        # here a waiter fails once connects have failed for fail_fast_after
        # (rather than wait for ever: asyncpg's acquire timeout is None).
        settings.setdefault("fail_fast_waiters", True)
        # asyncpg fails the acquire whose connect ran an ``init`` that raised.
        settings.setdefault("configure_fails_waiter", True)
        self._pool = AsyncPool(
            dsn,
            driver=_Adapter(connect, connection_class, record_class),
            min_size=init_size,
            max_size=max_size,
            timeout=None,
            max_idle=max_idle,
            max_uses=max_queries,
            # A reset that does nothing is no reset: a clean connection goes
            # straight back (measured: calling the hook cost 8 % of a cycle
            # at 100 tasks on 10 connections, in instructions).
            reset="full" if reset is None else "auto" if _does_nothing(reset) else reset,
            configure=init,
            connect_kwargs=connect_kwargs,
            **settings,
        )
        self._setup = setup
        self._init_size = init_size
        self._min_size = min_size
        self._max_size = max_size
        self._initialized = self._initializing = False
        self._closing = self._closed = False
        self._serving = False  # initialized, and neither closing nor closed

    # ------------------------------------------------------------------
    # start and stop

    def __await__(self) -> Generator[Any, None, Pool]:
        return self._start().__await__()

    async def __aenter__(self) -> Pool:
        return await self._start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> Pool:
        if self._initialized:
            return self
        if self._initializing:
            raise InterfaceError("pool is being initialized in another task")
        if self._closed:
            raise InterfaceError("pool is closed")
        self._initializing = True
        pool = self._pool
        try:
            await pool.open(wait=True)
            if self._init_size != self._min_size:
                await pool.resize(self._min_size, self._max_size)
        except BaseException as exc:
            self._closed = True
            pool.terminate()
            if isinstance(exc, PoolError):
                error = _translated(exc)
                if error is not exc:
                    raise error from exc
            raise
        finally:
            self._initializing = False
            self._initialized = True
        self._serving = not self._closed
        return self

    def _refusal(self) -> InterfaceError:
        if self._closing:
            return InterfaceError("pool is closing")
        if self._closed:
            return InterfaceError("pool is closed")
        if self._initializing:
            return InterfaceError(
                "pool is being initialized, but not yet ready: likely there is a race "
                "between creating a pool and using it"
            )
        return InterfaceError("pool is not initialized")

    async def close(self) -> None:
        """Close gracefully: wait until every connection is released, then close them all.

        Waits as long as it takes (use ``asyncio.wait_for`` for a limit), and
        logs a warning after 60 seconds.  If it is cancelled or fails, the
        pool is terminated.

        Raises:
            asyncpg.InterfaceError: the pool was never initialized.
        """
        if self._closed:
            return
        if not self._initialized:
            raise self._refusal()
        self._closing = True
        self._serving = False
        warning = asyncio.get_running_loop().call_later(_CLOSE_WARN_AFTER, self._warn_slow_close)
        try:
            await self._pool.close(timeout=None)
        except BaseException:
            self.terminate()
            raise
        finally:
            warning.cancel()
            self._closed = True
            self._closing = False

    def _warn_slow_close(self) -> None:
        logger.warning(
            "%s: close() has waited %g s for connections to be released; is one never "
            "released? asyncio.wait_for(pool.close(), timeout) bounds the wait",
            self._pool.name, _CLOSE_WARN_AFTER,
        )

    def terminate(self) -> None:
        """Close every connection now, leased ones included."""
        if self._closed:
            return
        self._closed = True
        self._serving = False
        self._pool.terminate()

    def is_closing(self) -> bool:
        """``True`` once ``close()`` or ``terminate()`` was called."""
        return self._closed or self._closing

    async def expire_connections(self) -> None:
        """Replace every open connection: idle ones now, leased ones when released."""
        await self._pool.expire()

    def set_connect_args(self, dsn: str | None = None, **connect_kwargs: Any) -> None:
        """Connect with these arguments from now on; open connections stay
        until they expire (see :meth:`expire_connections`).

        Raises:
            TypeError: the connect does not take one of the keywords.
        """
        self._pool._set_connect_args(dsn, connect_kwargs)

    # ------------------------------------------------------------------
    # sizes

    def get_size(self) -> int:
        """Open connections, leased or idle (not those being opened)."""
        s = self._pool.stats()
        return s.size - s.connecting

    def get_init_size(self) -> int:
        """Connections opened when the pool started."""
        return self._init_size

    def get_min_size(self) -> int:
        """Connections kept open even when idle."""
        return self._min_size

    def get_max_size(self) -> int:
        """The most connections the pool opens at once."""
        return self._max_size

    def get_idle_size(self) -> int:
        """Open connections that nobody holds."""
        return self._pool.stats().idle

    def stats(self) -> PoolStats:
        """pgmarina's frozen snapshot of sizes and counters (:class:`~pgmarina.PoolStats`)."""
        return self._pool.stats()

    def __repr__(self) -> str:
        return f"<pgmarina.compat.asyncpg.Pool {repr(self._pool)[1:-1]}>"

    # ------------------------------------------------------------------
    # acquire and release

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        """Lease a connection: ``await`` it (and :meth:`release` it), or use
        ``async with pool.acquire() as conn:``.

        ``timeout`` bounds the wait for a connection and ``setup`` together
        (``None``: no limit).

        Raises:
            TimeoutError: none became available in time.
            asyncpg.InterfaceError: the pool is not initialized, or closing.
            TypeError: ``timeout`` is not a number (at once).
            ValueError: ``timeout`` is NaN or negative (at once).
        """
        if timeout is not None:
            self._pool._check_timeout(timeout)  # wrong ones are refused now, as pgmarina does
        # PoolAcquireContext(self, timeout), without an __init__ call: once per acquire.
        ctx = _blank(PoolAcquireContext)
        ctx._pool = self
        ctx._timeout = timeout
        ctx._conn = None
        ctx._used = False
        return ctx

    async def _acquire(self, timeout: float | None) -> Any:
        if not self._serving:
            raise self._refusal()
        start = monotonic() if self._setup is not None and timeout is not None else 0.0
        # The shell's own fast path (what its acquire() awaits): a lease when
        # an idle connection is ready, else what the slow path starts from.
        conn = self._pool._take()
        if type(conn) is not PoolConnectionProxy:
            conn = await self._wait(conn, timeout)
        if self._setup is not None:
            await self._run_setup(conn, timeout, start)
        return conn

    async def _wait(self, taken: Any, timeout: float | None) -> Any:
        """The shell's slow path, from what its fast path ``_take()`` returned."""
        pool = self._pool
        try:
            return await pool._acquire_slow(taken, pool._check_timeout(timeout))
        except PoolError as exc:
            error = _translated(exc)
            if error is exc:
                raise
            raise error from exc

    async def _run_setup(
        self, conn: PoolConnectionProxy, timeout: float | None, start: float
    ) -> None:
        assert self._setup is not None
        try:
            if timeout is None:
                await self._setup(conn)
            else:  # the acquire checked ``timeout``; setup gets what it left
                await bounded(self._setup(conn), max(0.0, start + timeout - monotonic()))
        except BaseException:
            if not conn.released:  # its state is unknown: close it, the pool replaces it
                raw = conn._con
                raw.terminate()
                _end(conn)
                # As asyncpg's proxy, this one stays on its closed connection
                # (is_closed() says so), and the pool is done with it.
                set_con(conn, ClosedStandIn(raw, _released))
            raise

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        """Give a connection back; releasing it twice does nothing.

        When the caller waits for the reset (no other connection is idle, or
        more than two callers use the pool), ``timeout`` bounds it and what
        made it fail is raised, after the connection is discarded; a caller
        cancelled meanwhile leaves the connection to be reset afresh in the
        background, and kept.  Otherwise the reset runs in the background at
        once, bounded by ``reset_timeout``, and a failure is logged.

        Raises:
            asyncpg.InterfaceError: ``connection`` is not from this pool.
            TimeoutError: the reset took longer than ``timeout``.
        """
        reset = self._give_back(connection, timeout)
        if reset is not None:
            # Not under asyncio.shield (a task per release): a cancelled
            # caller leaves the pool to reset the connection afresh instead.
            await reset

    def _give_back(self, connection: Any, timeout: float | None) -> Awaitable[None] | None:
        """``release()`` up to the reset, which it returns if the caller must await it."""
        if type(connection) is not PoolConnectionProxy or connection._pool is not self._pool:
            raise InterfaceError(
                f"Pool.release() received invalid connection: {connection!r} is not a "
                "member of this pool"
            )
        con = connection._con
        if con is _GONE or type(con) is ClosedStandIn:  # released, or its setup failed
            return None
        if timeout is not None:
            timeout = self._pool._check_timeout(timeout)
        # _end, inline: once per release.
        reset = self._pool._return(connection, None, timeout, True)
        set_con(connection, _GONE)
        return reset  # type: ignore[no-any-return]

    # ------------------------------------------------------------------
    # one query on a leased connection

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        """``Connection.execute`` on a leased connection."""
        async with self.acquire() as con:
            return await con.execute(query, *args, timeout=timeout)  # type: ignore[no-any-return]

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> None:
        """``Connection.executemany`` on a leased connection."""
        async with self.acquire() as con:
            await con.executemany(command, args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, timeout: float | None = None,
                    record_class: type[Any] | None = None) -> list[Any]:
        """``Connection.fetch`` on a leased connection."""
        async with self.acquire() as con:
            return await con.fetch(  # type: ignore[no-any-return]
                query, *args, timeout=timeout, record_class=record_class
            )

    async def fetchval(self, query: str, *args: Any, column: int = 0,
                       timeout: float | None = None) -> Any:
        """``Connection.fetchval`` on a leased connection."""
        async with self.acquire() as con:
            return await con.fetchval(query, *args, column=column, timeout=timeout)

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None,
                       record_class: type[Any] | None = None) -> Any:
        """``Connection.fetchrow`` on a leased connection."""
        async with self.acquire() as con:
            return await con.fetchrow(query, *args, timeout=timeout, record_class=record_class)

    async def fetchmany(self, query: str, args: Any, *, timeout: float | None = None,
                        record_class: type[Any] | None = None) -> list[Any]:
        """``Connection.fetchmany`` on a leased connection."""
        async with self.acquire() as con:
            return await con.fetchmany(  # type: ignore[no-any-return]
                query, args, timeout=timeout, record_class=record_class
            )

    async def copy_from_table(self, table_name: str, *, output: Any, columns: Any = None,
                              schema_name: str | None = None, timeout: float | None = None,
                              **options: Any) -> str:
        """``Connection.copy_from_table`` on a leased connection (``options``:
        ``format``, ``delimiter``, ``header``… as there)."""
        async with self.acquire() as con:
            return await con.copy_from_table(  # type: ignore[no-any-return]
                table_name, output=output, columns=columns, schema_name=schema_name,
                timeout=timeout, **options,
            )

    async def copy_from_query(self, query: str, *args: Any, output: Any,
                              timeout: float | None = None, **options: Any) -> str:
        """``Connection.copy_from_query`` on a leased connection."""
        async with self.acquire() as con:
            return await con.copy_from_query(  # type: ignore[no-any-return]
                query, *args, output=output, timeout=timeout, **options
            )

    async def copy_to_table(self, table_name: str, *, source: Any, columns: Any = None,
                            schema_name: str | None = None, timeout: float | None = None,
                            **options: Any) -> str:
        """``Connection.copy_to_table`` on a leased connection."""
        async with self.acquire() as con:
            return await con.copy_to_table(  # type: ignore[no-any-return]
                table_name, source=source, columns=columns, schema_name=schema_name,
                timeout=timeout, **options,
            )

    async def copy_records_to_table(self, table_name: str, *, records: Any, columns: Any = None,
                                    schema_name: str | None = None,
                                    timeout: float | None = None,
                                    where: str | None = None) -> str:
        """``Connection.copy_records_to_table`` on a leased connection."""
        async with self.acquire() as con:
            return await con.copy_records_to_table(  # type: ignore[no-any-return]
                table_name, records=records, columns=columns, schema_name=schema_name,
                timeout=timeout, where=where,
            )


class PoolAcquireContext:
    """What ``Pool.acquire()`` returns: await it, or use it in ``async with``."""

    __slots__ = ("_conn", "_pool", "_timeout", "_used")

    def __init__(self, pool: Pool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None
        self._used = False

    def __await__(self) -> Generator[Any, None, Any]:
        self._used = True
        return self._pool._acquire(self._timeout).__await__()

    async def __aenter__(self) -> Any:
        if self._used or self._conn is not None:
            raise InterfaceError("a connection is already acquired")
        pool = self._pool
        if pool._serving and pool._setup is None:
            # Pool._acquire, inline: once per block.
            shell = pool._pool
            core = shell._core
            mine = shell._asyncio_loop
            if not (  # AsyncPool._on_loop, inline
                mine._thread_id == _thread_ident()  # type: ignore[attr-defined]
                if mine is not None
                else _running_loop() is shell._loop
            ):
                conn = shell._take()  # another loop: it refuses the caller
            elif core.waiters:
                conn = None  # strict FIFO: queue behind them, as _take says
            else:
                # AsyncPool._take's common case, inline as the shell's own
                # contexts have it (measured: 1 % of a cycle at 10 tasks).
                conn = core.checkout(monotonic())
                if (
                    conn is not None
                    and conn.state is IN_USE
                    and not core.pending
                    and not shell._is_closed(conn.conn)
                ):
                    self._conn = conn = shell._new_lease(conn.conn, conn, shell)
                    return conn
            if type(conn) is not PoolConnectionProxy:
                # Pool._wait, inline too: under contention most blocks wait,
                # and its coroutine cost 3 % of a cycle (callgrind).
                try:
                    if conn is None and self._timeout is None:
                        # The shell's slow path's common case, inline as its
                        # own contexts have it: queue, and be handed one.
                        start = monotonic()
                        fut = shell._queue_up(start, None, start, False)
                        try:
                            entry = await fut
                        except BaseException:
                            shell._waiter_left(fut)
                            raise
                        conn = shell._new_lease(entry.conn, entry, shell)
                    else:
                        conn = await shell._acquire_slow(conn, self._timeout)
                except PoolError as exc:
                    error = _translated(exc)
                    if error is exc:
                        raise
                    raise error from exc
        else:
            conn = await pool._acquire(self._timeout)
        self._conn = conn
        return conn

    async def __aexit__(self, *exc: object) -> None:
        self._used = True
        conn, self._conn = self._conn, None
        shell = self._pool._pool
        raw = conn._con
        if raw is not _GONE:  # (released in the block: _give_back does nothing)
            if shell._check_in_clean(conn, raw):
                set_con(conn, _GONE)  # (no reset, or a no-op one: see _does_nothing)
                return
            if shell._full_inline and (
                mine := shell._reset_in_line(conn, raw, shell._status(raw))
            ):
                # The shell's own release under its default (full) reset,
                # inline as its contexts have it: once per block.
                set_con(conn, _GONE)
                try:
                    await shell._adapter.full_reset(raw, None)
                except BaseException as error:
                    if shell._reset_failed(conn._entry, raw, mine, error, True):
                        raise
                    return
                shell._reset_done(conn._entry, mine)
                return
        reset = self._pool._give_back(conn, None)  # Pool.release, inline: once per block
        if reset is not None:
            await reset


def _translated(exc: PoolError) -> BaseException:
    """The error asyncpg would raise where pgmarina raised ``exc``."""
    if isinstance(exc, PoolClosed):
        closed: BaseException = InterfaceError("pool is closing")
        return closed
    if isinstance(exc, PoolConnectError) and exc.__cause__ is not None:
        # The driver's error, as asyncpg raises it; a copy, since the pool
        # hands the same one to every caller refused meanwhile.
        try:
            return copy.copy(exc.__cause__)
        except Exception:  # pragma: no cover - an error that cannot be copied
            return exc
    if isinstance(exc, PoolTimeout) and not _TIMEOUT_IS_ASYNCIOS:  # pragma: no cover - 3.10
        return asyncio.TimeoutError(str(exc))
    return exc


def create_pool(
    dsn: str | None = None,
    *,
    init_size: int | None = None,
    min_size: int = _MIN_SIZE,
    max_size: int = _MAX_SIZE,
    max_queries: int = _MAX_QUERIES,
    max_inactive_connection_lifetime: float = _MAX_INACTIVE,
    connect: Callable[..., Awaitable[Any]] | None = None,
    setup: Callable[[Any], Awaitable[Any]] | None = None,
    init: Callable[[Any], Awaitable[Any]] | None = None,
    reset: Callable[[Any], Awaitable[Any]] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    connection_class: type[Any] = asyncpg.connection.Connection,
    record_class: type[Any] = asyncpg.Record,
    **connect_kwargs: Any,
) -> Pool:
    """A pool with asyncpg's ``create_pool`` signature; ``await`` it or use ``async with``.

    Args:
        dsn: Connection string for ``asyncpg.connect``.
        init_size: Connections opened at start (default ``min_size``).
        min_size: Connections kept open even when idle.
        max_size: Most connections at once.
        max_queries: Leases after which a connection is replaced (asyncpg
            counts queries).
        max_inactive_connection_lifetime: Close connections above ``min_size``
            idle this long (``0``: never).
        connect: ``async def connect(dsn, **kwargs)`` used instead of
            ``asyncpg.connect``; must return a ``connection_class``.
        setup: ``async def setup(conn)`` run on each leased connection before
            ``acquire`` returns it.
        init: ``async def init(conn)`` run once on each new connection.
        reset: ``async def reset(conn)`` run on release after the rollback, in
            place of asyncpg's full session reset (``None``).
        loop: Ignored; the pool runs on the loop that awaits it.
        connection_class: Class of the connections (an ``asyncpg.Connection``).
        record_class: Class of the records (an ``asyncpg.Record``).
        **connect_kwargs: pgmarina settings named in :data:`PGMARINA_SETTINGS`
            go to the pool, everything else to the connect.
    """
    return Pool(
        dsn,
        init_size=init_size,
        min_size=min_size,
        max_size=max_size,
        max_queries=max_queries,
        max_inactive_connection_lifetime=max_inactive_connection_lifetime,
        connect=connect,
        setup=setup,
        init=init,
        reset=reset,
        loop=loop,
        connection_class=connection_class,
        record_class=record_class,
        **connect_kwargs,
    )
