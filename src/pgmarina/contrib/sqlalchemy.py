"""SQLAlchemy engines on a pgmarina pool: ``create_engine(url, poolclass=PgMarinaPool)``.

How it fits together
--------------------
SQLAlchemy splits pooling in two.  Its :class:`sqlalchemy.pool.Pool` keeps
*records* (one per DBAPI connection: the connect events ran on it, its
``info`` dict, when it was made) and hands them out through ``_do_get`` and
takes them back through ``_do_return_conn``.  Everything users know about
SQLAlchemy's pools (rollback on return, ``pool_pre_ping``, ``pool_recycle``,
events, invalidation) happens around those two calls, in code the pool
subclass inherits.  :class:`PgMarinaPool` keeps all of that and replaces only
the storage: ``_do_get`` borrows a connection from a pgmarina pool, and the
checkin (``_return_conn``) gives it back.  SQLAlchemy hands the record the
driver's own connection (wrapped by its async shims for async engines): the
engine's Connection is what borrowers hold, and it refuses use after its
close.  So the record itself is the lease, and no pgmarina lease is made (the
shells' ``_lend`` and ``_take_back``).

One SQLAlchemy record belongs to one physical connection for as long as that
connection lives.  The pool keeps it by the driver connection's id (asyncpg's
connections take no attributes), made when pgmarina connects and dropped when
pgmarina closes the connection.  It is not kept in pgmarina's entry: a record
holds its pool, and pgmarina's finalizers hold the entries (to close their
connections when a pool is collected unclosed), so an engine dropped without
``dispose()`` would never be collected.  So the ``connect`` event runs once
per physical connection, as with SQLAlchemy's own pools, and the engine's
session state (isolation level, ``SET`` in a connect event) stays with the
connection it was set on.  That is also why each engine gets a pgmarina
pool of its own: a pool shared between engines would hand one engine's
session state to the other.

pgmarina makes the connections, but through the engine: its connect calls
the engine's own ``creator`` (the URL, ``connect_args``, the ``do_connect``
event, ``creator=`` and ``async_creator=`` all apply) and keeps the DBAPI
connection SQLAlchemy made until the connection's first checkout gives it to
its record.  pgmarina pools the driver connection underneath.

What maps onto what:

- ``pool_size`` is pgmarina's ``min_size``: up to that many are kept open
  once a checkout needed them (as in ``QueuePool``, none opens ahead of
  demand: ``prefill=False``), and ``pool_size +
  max_overflow`` its ``max_size``; ``pool_timeout`` its acquire ``timeout``;
  ``pool_recycle`` its ``max_lifetime`` (pgmarina replaces a connection that
  old while it is idle, rather than at the checkout that finds it too old);
  ``pool_use_lifo``, when given, its ``idle_order`` (``True``: ``"lifo"``,
  ``False``: ``"fifo"``); left out, pgmarina's own order (LIFO).
  ``pool_options={...}`` passes any other pgmarina setting.
- Invalidating a connection (``conn.invalidate()``, a disconnect error, a
  failed pre-ping) closes it and pgmarina drops it when it comes back;
  invalidating the whole pool (a disconnect error does) also expires every
  idle pgmarina connection, and leased ones are replaced as they return.
- A detached connection (``conn.detach()``) leaves the pgmarina pool
  without being closed: its user owns it.
- ``dispose()`` closes the pgmarina pool (idle connections now, leased ones
  as they come back); the pool makes a new one on its next checkout, so, as
  with ``QueuePool``, it stays usable, and a checkout waiting through it is
  served by the new one.  ``recreate()`` returns a new pool with the same
  settings, as ``engine.dispose()`` expects; in a fork's child
  (``engine.dispose(close=False)``) the old pool's connections are left alone.

Async engines run this same synchronous pool API inside SQLAlchemy's
greenlets; the pool waits on pgmarina's :class:`~pgmarina.AsyncPool` with
SQLAlchemy's ``await_only``, and only when its fast path has no connection
ready (an idle connection is taken with no await at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

try:
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import pool as sa_pool
    from sqlalchemy.pool.base import _ConnectionRecord
    from sqlalchemy.util import concurrency as _concurrency
except ImportError as _missing:  # pragma: no cover - depends on the environment
    from ..errors import DriverNotInstalled

    raise DriverNotInstalled(
        "pgmarina.contrib.sqlalchemy needs SQLAlchemy 2: pip install 'pgmarina[sqlalchemy]'"
    ) from _missing

from .. import errors
from .._core import Entry
from .._redact import describe_target
from ..adapters import resolve
from ..shells._common import _POOL_KEYWORDS
from ..shells.aio import AsyncPool
from ..shells.threaded import Pool

__all__ = ["PgMarinaPool", "PoolTimeout"]

# SQLAlchemy 2.1 calls it await_, 2.0 await_only (still an alias in 2.1).
_await: Callable[[Any], Any] = getattr(_concurrency, "await_", None) or _concurrency.await_only
_in_greenlet: Callable[[], bool] = _concurrency.in_greenlet
_greenlet_spawn = _concurrency.greenlet_spawn

#: Closes started by a dispose() outside the engine's greenlets, held until done.
_closing: set[asyncio.Task[Any]] = set()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


#: (async engine, dialect driver) -> (pgmarina shell, pgmarina driver)
_SHELLS: dict[tuple[bool, str], tuple[type[Any], str]] = {
    (False, "psycopg"): (Pool, "psycopg"),
    (False, "psycopg2"): (Pool, "psycopg2"),
    (True, "asyncpg"): (AsyncPool, "asyncpg"),
    (True, "psycopg"): (AsyncPool, "psycopg"),
}

#: pgmarina settings the pool derives from SQLAlchemy's own arguments.
_DERIVED = frozenset(
    {"min_size", "max_size", "timeout", "max_lifetime", "idle_order", "driver", "connect_kwargs"}
)


#: pgmarina settings the pool sets otherwise than pgmarina does, so that it
#: behaves as SQLAlchemy's own pools (``pool_options`` may set them back):
#: connections open when a checkout needs one, and ``pool_size`` of them are
#: kept, as in ``QueuePool`` (also, the dialect's first-connect set-up runs
#: before the pool opens a second connection, which psycopg's needs for
#: hstore); and a connect that fails fails the checkouts then waiting at
#: once, with the driver's error, as the checkout's own connect would.
_SQLALCHEMY_WAYS: dict[str, Any] = {
    "prefill": False, "fail_fast_after": 0.0, "fail_fast_waiters": True,
}

#: The pgmarina pool's target in ``repr`` until its first connection tells where it goes.
_BY_ENGINE = "(engine URL)"


def _where(raw: Any) -> str:
    """``host:port/dbname`` of a driver connection, for the pool's ``repr``."""
    try:
        found = getattr(raw, "info", None)  # psycopg's and psycopg2's ConnectionInfo
        if found is not None:
            host, port, db = found.host, found.port, found.dbname
        else:  # asyncpg
            addr, db = raw._addr, raw._params.database
            host, port = addr if isinstance(addr, tuple) else (addr, None)
    except Exception:  # pragma: no cover - a driver that keeps them elsewhere
        return _BY_ENGINE
    return describe_target(None, {"host": host, "port": port, "dbname": db})


def _let_go(entries: set[Any], adapter: Any) -> None:
    """Finalizer of an AsyncPool collected unclosed: cut its connections off."""
    for entry in list(entries):
        if entry.conn is not None:
            with contextlib.suppress(Exception):  # best effort, at collection time
                adapter.terminate(entry.conn)


class PoolTimeout(errors.PoolTimeout, sa_exc.TimeoutError):
    """No connection came free within ``pool_timeout``.

    Both pgmarina's :class:`~pgmarina.PoolTimeout` and SQLAlchemy's
    ``sqlalchemy.exc.TimeoutError``, so code written for either catches it.
    (A failed connect is not a timeout: the checkout raises the driver's
    error, which the engine shows to its ``handle_error`` event and raises
    as ``sqlalchemy.exc.OperationalError``, as with SQLAlchemy's own pools.)
    """


class _Record(_ConnectionRecord):
    """SQLAlchemy's record of one physical connection, plus, while it is
    checked out, the pgmarina entry it borrowed and the pool it came from.

    ``made_info``: what the ``do_connect`` event put in its ``info`` when
    pgmarina connected, until the first checkout puts it back (SQLAlchemy
    empties ``info`` just before it asks for the connection).
    """

    __slots__ = ("entry", "made_info", "pg")

    entry: Any
    pg: Any
    made_info: dict[Any, Any] | None


class _Stash:
    """What the engine adapter adds to pgmarina's own driver adapter.

    Its connect makes the connection's SQLAlchemy record, asks the engine's
    creator for a DBAPI connection with it (so the ``do_connect`` event sees
    the record, as with SQLAlchemy's own pools), and gives pgmarina the
    driver connection underneath.  The record goes to the pool's
    ``_records``, by the driver connection's id; SQLAlchemy's connection is
    kept here until the connection's first checkout takes it (:meth:`take`).
    Close and terminate drop both, so nothing piles up.  (The stored DBAPI
    connection holds the driver connection, so the id cannot be reused
    while it is stored.)  The pool is held weakly: pgmarina's finalizers
    hold this adapter.
    """

    #: An engine dropped without ``dispose()`` is ordinary with SQLAlchemy (its
    #: own pools close their connections as they are collected, silently): the
    #: thread Pool's notice of a pool collected unclosed is logged at DEBUG.
    collected_quietly = True

    def __init__(self, pool: weakref.ref[Any], driver_connection: Callable[[Any], Any]) -> None:
        self._pool = pool
        self._driver_connection = driver_connection
        self._made: dict[int, Any] = {}
        #: Set when the pool is abandoned (``engine.dispose(close=False)``, in a
        #: child process after a fork): its connections are the parent's, and
        #: pgmarina must not close them, nor send a goodbye on their sockets.
        self.abandoned = False
        #: Connections SQLAlchemy detached (``conn.detach()``): pgmarina lets go of
        #: them without closing them.  Held until then, so their ids stay theirs.
        self._detached: dict[int, Any] = {}

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        """The engine checked its URL; pgmarina gets no connect arguments."""

    def _make(self) -> tuple[Any, Any]:
        """A DBAPI connection from the engine, and the record it was made with."""
        pool = self._pool()
        if pool is None:  # pragma: no cover - the engine dropped its pool mid-connect
            raise errors.PoolClosed("the engine's pool is gone")
        rec = _Record(pool, connect=False)
        rec.entry = rec.pg = None
        dbapi_connection = pool._connect_via_engine(rec)
        # SQLAlchemy empties info before it asks for the connection (_hand_over).
        rec.made_info = dict(rec.info) or None
        return dbapi_connection, rec

    def _keep(self, made: tuple[Any, Any]) -> Any:
        dbapi_connection, rec = made
        raw = self._driver_connection(dbapi_connection)
        key = id(raw)
        self._made[key] = dbapi_connection
        pool = self._pool()
        if pool is not None:
            pool._records[key] = rec
        return raw

    def take(self, raw: Any) -> Any:
        """SQLAlchemy's DBAPI connection for ``raw``, once; ``None`` after."""
        return self._made.pop(id(raw), None)

    def _forget(self, conn: Any) -> None:
        key = id(conn)
        self._made.pop(key, None)
        pool = self._pool()
        if pool is not None:
            pool._records.pop(key, None)

    def detach(self, conn: Any) -> None:
        """Have pgmarina's close and terminate leave ``conn`` open: its user owns it now."""
        self._detached[id(conn)] = conn

    def terminate(self, conn: Any) -> None:
        if self.abandoned or id(conn) in self._detached:
            return  # the close that follows forgets it
        self._forget(conn)
        super().terminate(conn)  # type: ignore[misc]

    def is_permanent(self, exc: BaseException) -> bool:
        # The async DBAPI shims wrap the driver's error; judge the driver's.
        inner = exc.__cause__ if exc.__cause__ is not None else exc
        return bool(super().is_permanent(inner))  # type: ignore[misc]


class _SyncStash(_Stash):
    def connect(self, dsn: str | None, kwargs: Mapping[str, Any], timeout: float) -> Any:
        return self._keep(self._make())

    def close(self, conn: Any) -> None:
        if self._detached.pop(id(conn), None) is not None or self.abandoned:
            return
        self._forget(conn)
        super().close(conn)  # type: ignore[misc]


class _AsyncStash(_Stash):
    async def connect(self, dsn: str | None, kwargs: Mapping[str, Any]) -> Any:
        # The async DBAPI shims await inside a greenlet: give them one.
        return self._keep(await _greenlet_spawn(self._make))

    async def close(self, conn: Any, timeout: float) -> None:
        if self._detached.pop(id(conn), None) is not None or self.abandoned:
            return
        self._forget(conn)
        await super().close(conn, timeout)  # type: ignore[misc]


_adapter_classes: dict[type[Any], type[Any]] = {}


def _engine_adapter(driver: str, sync: bool, pool: weakref.ref[Any], dialect: Any) -> Any:
    """pgmarina's adapter for ``driver``, connecting through the engine."""
    base = type(resolve(driver, sync=sync))
    cls = _adapter_classes.get(base)
    if cls is None:
        stash = _SyncStash if sync else _AsyncStash
        cls = type(f"Engine{base.__name__}", (stash, base), {"__module__": __name__})
        _adapter_classes[base] = cls
    return cls(pool, dialect.get_driver_connection)


class PgMarinaPool(sa_pool.Pool):
    """A SQLAlchemy pool whose connections come from a pgmarina pool.

    Give it to an engine as its pool class; the engine's pool arguments set
    it up::

        engine = create_engine(
            "postgresql+psycopg://app@db/app",
            poolclass=PgMarinaPool,
            pool_size=5,        # pgmarina min_size: kept open once opened
            max_overflow=10,    # max_size = pool_size + max_overflow
            pool_timeout=30,
            pool_options={"max_idle": 300, "check_window": 2.0},
        )

    ``create_engine`` (``postgresql+psycopg``, ``+psycopg2``) runs it on the
    thread :class:`~pgmarina.Pool`, ``create_async_engine``
    (``postgresql+asyncpg``, ``+psycopg``) on :class:`~pgmarina.AsyncPool`.
    Each engine gets its own pgmarina pool, opened at its first checkout.

    Every parameter takes a keyword or a position, since ``create_engine``
    passes only those (it reads the constructor's signature).

    Args:
        creator: The engine's connect function (``create_engine`` passes it).
        pool_size: Connections kept open once checkouts needed them
            (pgmarina's ``min_size``, with ``prefill=False``; give
            ``pool_options={"prefill": True}`` to open them ahead, at the
            first checkout).
        max_overflow: Connections allowed beyond ``pool_size``; pgmarina's
            ``max_size`` is the sum.  ``-1`` (no limit) is refused: a pool
            needs a bound.
        timeout: Seconds a checkout waits for a connection (``pool_timeout``;
            ``None``: for ever); then :class:`PoolTimeout` is raised.
        recycle: Replace connections older than this many seconds
            (``pool_recycle``; ``-1``: never); pgmarina's ``max_lifetime``.
        echo: ``echo_pool``, as for every SQLAlchemy pool.
        logging_name: ``pool_logging_name``, as for every SQLAlchemy pool;
            it also names the pgmarina pool, unless ``pool_options`` does.
        reset_on_return: ``pool_reset_on_return``, as for every SQLAlchemy
            pool.
        events: ``pool_events``, as for every SQLAlchemy pool.
        dialect: The engine's dialect (``create_engine`` passes it).
        pre_ping: ``pool_pre_ping``, as for every SQLAlchemy pool.
        use_lifo: ``pool_use_lifo``: true, hand out the most recently used
            idle connection first (``idle_order="lifo"``); false, the one idle
            longest (``"fifo"``, QueuePool's default).  Left out (``None``),
            pgmarina's default, LIFO: it measured faster than FIFO for async
            engines, slower for sync ones at one thread (see docs/sqlalchemy.md).
        pool_options: Other pgmarina settings (``max_idle``,
            ``check_window``, ``name``…), see
            :class:`~pgmarina.Pool`.  Connect arguments are not among them:
            the engine's URL and ``connect_args`` say how to connect.  Three
            differ from pgmarina's defaults, to behave as SQLAlchemy's own
            pools: ``prefill=False`` (see ``pool_size``), and
            ``fail_fast_after=0`` with ``fail_fast_waiters=True`` (a failed
            connect fails the checkouts then waiting at once, with the
            driver's error, and a checkout during an outage fails at once
            while another is still trying to connect).  With ``pre_ping``,
            ``check_window`` is ``None``: SQLAlchemy's ping is the check.

    Raises:
        TypeError: no dialect, or a ``pool_options`` key the pool derives
            itself, or a setting pgmarina does not know.
        ValueError: a driver pgmarina does not pool, or a bad setting.
    """

    def __init__(
        self,
        creator: Any,
        pool_size: int = 5,
        max_overflow: int = 10,
        timeout: float | None = 30.0,
        recycle: float = -1,
        echo: Any = None,
        logging_name: str | None = None,
        reset_on_return: Any = True,
        events: Any = None,
        dialect: Any = None,
        pre_ping: bool = False,
        use_lifo: bool | None = None,
        pool_options: Mapping[str, Any] | None = None,
        _dispatch: Any = None,
    ) -> None:
        if dialect is None:
            raise TypeError(
                "PgMarinaPool needs the engine's dialect: create it with "
                "create_engine(url, poolclass=PgMarinaPool) or create_async_engine"
            )
        key = (bool(dialect.is_async), dialect.driver)
        if dialect.name != "postgresql" or key not in _SHELLS:
            raise ValueError(
                f"dialect: PgMarinaPool pools postgresql+psycopg and +psycopg2 engines and "
                f"postgresql+asyncpg and +psycopg async engines, not {dialect.name}+"
                f"{dialect.driver}{' (async)' if dialect.is_async else ''}"
            )
        for name, value in (("pool_size", pool_size), ("max_overflow", max_overflow)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if max_overflow < 0:
            raise ValueError(
                f"max_overflow must be 0 or more, not {max_overflow} (a pgmarina pool has a "
                "bound: give the most connections beyond pool_size)"
            )
        if pool_options is not None and not isinstance(pool_options, Mapping):
            raise TypeError(
                f"pool_options must be a mapping, not {type(pool_options).__name__}"
            )
        options = dict(pool_options or {})
        unknown = sorted(k for k in options if k not in _POOL_KEYWORDS)
        if unknown:
            raise TypeError(
                f"pool_options: {', '.join(map(repr, unknown))} is not a pgmarina pool setting "
                "(connect arguments go in the URL or the engine's connect_args)"
            )
        clash = sorted(options.keys() & _DERIVED)
        if clash:
            raise TypeError(
                f"pool_options cannot set {', '.join(clash)}: give pool_size, max_overflow, "
                "pool_timeout, pool_recycle and pool_use_lifo to the engine instead"
            )
        if isinstance(recycle, bool) or not isinstance(recycle, (int, float)):
            raise TypeError(f"recycle must be a number, not {type(recycle).__name__}")
        super().__init__(
            creator,
            recycle=-1,  # pgmarina's max_lifetime recycles; see the module docstring
            echo=echo,
            logging_name=logging_name,
            reset_on_return=reset_on_return,
            events=events,
            dialect=dialect,
            pre_ping=pre_ping,
            _dispatch=_dispatch,
        )
        self._settings: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "timeout": timeout,
            "recycle": recycle,
            "use_lifo": use_lifo,
            "pool_options": pool_options,
        }
        shell, driver = _SHELLS[key]
        self._shell = shell
        #: The SQLAlchemy record of each connection, by its driver connection's
        #: id (see the module docstring; the engine adapter keeps it).
        self._records: dict[int, _Record] = {}
        # pgmarina connects through the engine's creator (see _creator);
        # records get their DBAPI connection from _hand_over.
        self._adapter = _engine_adapter(driver, shell is Pool, weakref.ref(self), dialect)
        self._pg_settings: dict[str, Any] = {
            "min_size": pool_size,
            "max_size": pool_size + max_overflow,
            "timeout": timeout,
            "max_lifetime": None if recycle < 0 else recycle,
            **({} if use_lifo is None else {"idle_order": "lifo" if use_lifo else "fifo"}),
            **_SQLALCHEMY_WAYS,
            # pool_pre_ping pings every checkout of a connection used before:
            # pgmarina's check of the connections idle past check_window
            # would be a second round trip for the same answer.
            **({"check_window": None} if pre_ping else {}),
            **options,
        }
        if logging_name and "name" not in options:
            self._pg_settings["name"] = logging_name
        #: Set by recreate(): the engine uses the new pool from then on.
        self._superseded = False
        self._pg: Any = self._new_pg()  # settings checked now, opened at the first checkout
        self._opening = threading.Lock()
        #: The pgmarina pool checkouts go to: ``None`` before the first
        #: checkout opens ``_pg``, and after ``dispose()`` closed it.
        self._open_pg: Any = None
        #: The process that opened the pgmarina pool (a fork's child is another).
        self._opened_in = os.getpid()

    # The engine's connect function.  SQLAlchemy's pools call it as
    # ``_invoke_creator(record)``; here pgmarina calls it, through the engine
    # adapter, and records get their connection from _hand_over instead.
    # Setting it (``pool._creator = f``, as some tests do) keeps that so.

    @property
    def _creator(self) -> Any:
        return self._creator_arg

    @_creator.setter
    def _creator(self, creator: Any) -> None:
        self._creator_arg = creator
        self._connect_via_engine = self._should_wrap_creator(creator)
        self._invoke_creator = self._hand_over

    @_creator.deleter
    def _creator(self) -> None:
        del self._creator_arg, self._connect_via_engine, self._invoke_creator

    # ------------------------------------------------------------------
    # the pgmarina pool underneath

    def _new_pg(self) -> Any:
        settings = self._pg_settings
        if self._superseded:
            # A checkout still on this pool after the engine moved on to its
            # recreate() (it had read engine.pool before): keep nothing idle,
            # so that this pool, which no one will dispose, holds no connection.
            settings = {**settings, "min_size": 0, "max_idle": 0}
        pg = self._shell(None, driver=self._adapter, **settings)
        pg._target = _BY_ENGINE  # told by the first connection (_hand_over)
        # pool_timeout bounds the wait for a connection to come back, not
        # the connect a checkout needs, as in QueuePool (pool_timeout=0 too).
        pg._lend_waits_for_connect = True
        if self._shell is AsyncPool:
            # The thread Pool drops the connections of a pool collected unclosed;
            # AsyncPool leaves that to its user, and here the user is this class.
            # A pgmarina pool this pool let go of without closing it (an engine
            # dropped undisposed; a dispose that raced checkouts) must not leave
            # its connections open until each is collected on its own.
            weakref.finalize(pg, _let_go, pg._core.entries, self._adapter)
        return pg

    @property
    def pgmarina_pool(self) -> Any:
        """The pgmarina pool underneath (for its ``stats()``, say)."""
        return self._pg

    def _borrow(self) -> tuple[Any, Entry]:
        """The pgmarina pool checkouts go to, and an entry borrowed from it,
        opening the pool first if need be (``_do_get`` does this inline)."""
        pg = self._open_pg
        try:
            if pg is not None:
                try:
                    return pg, self._lend(pg)
                except errors.PoolClosed:
                    pass  # disposed under this checkout: on to the new one
            return self._open_and_lend()
        except (errors.PoolTimeout, errors.PoolConnectError) as exc:
            raise self._translated(exc)  # noqa: B904 - see _translated

    def _translated(self, exc: errors.PoolError) -> BaseException:
        """What a checkout raises for pgmarina's ``exc``.

        A timeout: :class:`PoolTimeout` (SQLAlchemy's ``TimeoutError`` too).
        A failed connect (pgmarina fails the checkouts then waiting, see
        ``_SQLALCHEMY_WAYS``): the driver's error itself, as SQLAlchemy's own
        pools raise it, so that the engine runs its ``handle_error`` event and
        wraps it; raised where ``exc`` is handled, it has pgmarina's error as
        its context.
        """
        if isinstance(exc, errors.PoolTimeout):
            timeout = PoolTimeout(str(exc))
            timeout.__cause__ = exc
            return timeout
        cause = exc.__cause__
        dbapi = getattr(self._dialect, "loaded_dbapi", None)
        if cause is not None and dbapi is not None and isinstance(cause, dbapi.Error):
            return cause
        return exc

    def _open_and_lend(self) -> tuple[Any, Entry]:
        """Open the pgmarina pool (a new one after ``dispose()``), then borrow
        from it; checkouts find it open from then on."""
        while True:
            with self._opening:
                pg = self._pg
                if pg.closed:  # disposed: start afresh, as QueuePool does
                    pg = self._pg = self._new_pg()
                self._opened_in = os.getpid()
                if self._shell is Pool:
                    pg.open()
                else:
                    pg._start()  # needs the running loop, not an await
                self._open_pg = pg
            try:
                return pg, self._lend(pg)
            except errors.PoolClosed:
                # dispose() closed it under this checkout (which was waiting):
                # wait on the new one, as QueuePool's checkouts go on across
                # its dispose().  Nothing else closes it.
                continue

    @staticmethod
    def _lend(pg: Any) -> Entry:
        # The shell's _lend: an entry, or (AsyncPool) the awaitable of one.
        # Async engines run this in a greenlet, so only a checkout that must
        # wait or check switches greenlets.
        got = pg._lend()
        if type(got) is Entry:
            return got
        return _await(got)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------
    # SQLAlchemy's pool interface

    def _do_get(self) -> Any:
        pg = self._open_pg
        try:
            if pg is None:
                pg, entry = self._open_and_lend()
            else:
                try:
                    # _borrow and _lend, inline: this runs on every checkout.
                    entry = pg._lend()
                    if type(entry) is not Entry:
                        entry = _await(entry)
                except errors.PoolClosed:
                    pg, entry = self._open_and_lend()
        except (errors.PoolTimeout, errors.PoolConnectError) as exc:
            raise self._translated(exc)  # noqa: B904 - see _translated
        # Made with the connection; at its first checkout it connects (runs
        # the connect events) through _hand_over.
        rec = self._records.get(id(entry.conn))
        if rec is None:  # pragma: no cover - a bug
            self._drop(pg, entry)
            raise errors.PoolError("pgmarina handed out a connection SQLAlchemy never saw")
        rec.entry = entry
        rec.pg = pg
        return rec

    def _hand_over(self, rec: Any) -> Any:
        """The record's DBAPI connection, when SQLAlchemy asks its creator for one.

        That happens at a connection's first checkout, and again when
        SQLAlchemy closed the record's connection in the middle of a checkout
        (a failed pre-ping, a ``checkout`` event that raised
        ``DisconnectionError``) and wants another.  Then the dead one goes
        back to pgmarina (which drops it) and the record moves to a connection
        from a new acquire.
        """
        entry, pg = rec.entry, rec.pg
        if entry is None:
            # Not checked out: SQLAlchemy reconnects a checked-in record of
            # its own (``get_connection()`` on it, after an invalidation).
            # No checkout will give it back, so it gets a connection of its
            # own from the engine, outside the pool, closed with the record.
            return self._connect_via_engine(rec)
        dbapi_connection = self._adapter.take(entry.conn)
        if dbapi_connection is not None:  # the connection's first checkout
            self._restore_info(rec, rec)
            if pg._target is _BY_ENGINE:
                pg._target = _where(entry.conn)
            return dbapi_connection
        rec.entry = rec.pg = None
        self._drop(pg, entry)
        pg, entry = self._borrow()
        rec.entry, rec.pg = entry, pg
        key = id(entry.conn)
        other = self._records.get(key)
        self._records[key] = rec
        dbapi_connection = self._adapter.take(entry.conn)
        if dbapi_connection is None:
            if other is None or other.dbapi_connection is None:  # pragma: no cover - a bug
                raise errors.PoolError("pgmarina handed out a connection SQLAlchemy never saw")
            # A connection SQLAlchemy set up before (not in use: it was idle).
            # This record takes it over, and its connect events run on it again.
            return other.dbapi_connection
        if other is not None:  # the record made with it, never checked out
            self._restore_info(rec, other)
        return dbapi_connection

    @staticmethod
    def _restore_info(rec: Any, made: Any) -> None:
        """Give ``rec`` what ``do_connect`` put in the ``info`` of ``made``,
        the record its connection was made with."""
        if made.made_info:
            rec.info.update(made.made_info)
            made.made_info = None

    def _check_in(self, record: Any, detached: bool = False) -> None:
        """Give a record's connection back to pgmarina.

        Every checkin (``ConnectionPoolEntry.checkin``) calls it as
        ``_return_conn``; only a fairy's ``detach()`` comes through
        ``_do_return_conn``, with ``detached`` set.
        """
        entry = record.entry
        if entry is None:  # already back (a checkout that failed before its entry)
            return
        pg = record.pg
        record.entry = record.pg = None
        if record.dbapi_connection is None:
            if detached:  # its user keeps it
                self._detach(pg, entry)
            else:
                # Invalidated: SQLAlchemy closed it, or tried to (a close that
                # failed or was cut short still drops the connection).
                self._drop(pg, entry)
            return
        if record._soft_invalidate_time > record.starttime:
            # Soft-invalidated: no one gets it again.  Closed the SQLAlchemy
            # way (its close event), then dropped.
            try:
                record.close()
            except Exception:
                self.logger.debug("closing a soft-invalidated connection failed", exc_info=True)
            self._drop(pg, entry)
            return
        reset = pg._take_back(entry)
        if reset is not None:  # AsyncPool, a connection SQLAlchemy did not reset
            self._finish(pg, reset)

    # Called once per checkin: the method itself, not a wrapper around it.
    _return_conn = _check_in

    def _do_return_conn(self, record: Any) -> None:
        self._check_in(record, detached=True)

    def _drop(self, pg: Any, entry: Entry) -> None:
        """Give back a borrowed entry whose connection must not be used again."""
        raw = entry.conn
        self._records.pop(id(raw), None)
        if not self._adapter.is_closed(raw):
            self._adapter.terminate(raw)
        reset = pg._take_back(entry)  # a closed connection is dropped: no reset
        if reset is not None:  # pragma: no cover - defensive
            self._finish(pg, reset)

    def _detach(self, pg: Any, entry: Entry) -> None:
        """Have pgmarina forget a borrowed connection without closing it."""
        self._records.pop(id(entry.conn), None)
        self._adapter.detach(entry.conn)
        # The shells' own discard: the entry leaves the pool and a replacement
        # can be made; the close it leads to leaves the connection alone.
        pg._discard(entry, lost=False)

    @staticmethod
    def _finish(pg: Any, work: Any) -> None:
        """Await ``work`` in this greenlet, or leave it to a task of ``pg``'s."""
        if _in_greenlet():
            _await(work)
        else:  # a return from outside the engine's greenlets (a collected connection)
            pg._track(pg._loop.create_task(work))

    def _invalidate(
        self, connection: Any, exception: BaseException | None = None, _checkin: bool = True
    ) -> None:
        """Invalidate the whole pool: SQLAlchemy's, and pgmarina's idle connections."""
        super()._invalidate(connection, exception, _checkin)
        pg = self._pg
        if pg.closed or self._open_pg is None:
            return  # closed, or not open yet: nothing idle
        if self._shell is Pool:
            pg.expire()
        else:
            # AsyncPool.expire() without its await: it does no IO of its own.
            pg._core.expire(monotonic())
            pg._drain()

    def dispose(self) -> None:
        """Close the connections that sit idle; leased ones close as they come back.

        The pool stays usable: its next checkout starts a new pgmarina pool.
        """
        with self._opening:  # not held across the close: an async close switches greenlets
            pg = self._pg
            self._open_pg = None
        if self._shell is Pool:
            pg.close(wait=False)
        elif not pg._opened:
            pg.terminate()  # holds nothing; refuses its further use
        elif _in_greenlet():  # AsyncEngine.dispose() runs this in a greenlet
            _await(pg.close(wait=False))
        else:
            loop = _running_loop()
            if loop is not None and loop is pg._loop:
                # Called from a coroutine, not through the engine: close in a
                # task (the close does its work at once, then waits for its own).
                closing = loop.create_task(pg.close(wait=False))
                _closing.add(closing)
                closing.add_done_callback(_closing.discard)
            else:
                # Not on the pool's loop: no way to close gracefully from here.
                pg.terminate()
        self.logger.info("Pool disposed. %s", self.status())

    def recreate(self) -> PgMarinaPool:
        """A new pool with the same settings (``engine.dispose()`` calls it).

        Recreated without a ``dispose()`` first (``engine.dispose(close=False)``)
        in a child process after a fork, which is what SQLAlchemy documents it
        for, this pool is abandoned: its connections are the parent's, and
        pgmarina never closes them (nor could it: its threads and event loop
        stayed in the parent).  In the process that opened it (the same call,
        or two ``engine.dispose()`` racing), it is disposed, so that its
        connections do not wait for the garbage collector.
        """
        self.logger.info("Pool recreating")
        self._superseded = True
        if self._open_pg is not None and not self._pg.closed:
            if os.getpid() != self._opened_in:
                self._adapter.abandoned = True
            else:
                self.dispose()
        return self.__class__(
            self._creator,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            events=None,
            dialect=self._dialect,
            pre_ping=self._pre_ping,
            _dispatch=self.dispatch,
            **self._settings,
        )

    def status(self) -> str:
        """One line: the pgmarina pool's state and sizes."""
        return f"PgMarinaPool on {self._pg!r}"

    def size(self) -> int:
        """Most connections at once (``pool_size + max_overflow``)."""
        return int(self._pg.max_size)

    def timeout(self) -> float | None:
        """Seconds a checkout waits (``pool_timeout``)."""
        return self._pg.timeout  # type: ignore[no-any-return]

    def overflow(self) -> int:
        """Connections open beyond ``pool_size``."""
        return max(0, int(self._pg.stats().size) - int(self._settings["pool_size"]))

    def checkedin(self) -> int:
        """Connections idle in the pool."""
        return int(self._pg.stats().idle)

    def checkedout(self) -> int:
        """Connections checked out."""
        return int(self._pg.stats().in_use)
