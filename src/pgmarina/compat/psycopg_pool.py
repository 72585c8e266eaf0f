"""psycopg_pool's API on pgmarina's pools: change one import, keep your code.

``from pgmarina.compat.psycopg_pool import ConnectionPool`` gives the same
four classes as ``psycopg_pool`` (``ConnectionPool``, ``AsyncConnectionPool``,
``NullConnectionPool``, ``AsyncNullConnectionPool``), with psycopg_pool 3.3's
signatures, defaults, errors and stats names, served by pgmarina's thread
:class:`~pgmarina.Pool` and :class:`~pgmarina.AsyncPool`.

How it is put together
----------------------
Each façade pool owns one pgmarina pool (the *shell*) and translates:

========================  ==================================================
psycopg_pool              pgmarina
========================  ==================================================
``getconn(timeout)``      ``acquire(timeout=...)``; the lease is kept here,
                          the connection itself is handed out
``putconn(conn)``         ``release(lease)``: rollback, ``reset``, discard
``connection()``          ``getconn``, psycopg's own ``with conn`` (commit or
                          roll back), ``putconn``
``open`` / ``close``      ``open`` / ``close(wait=False)``
``wait()``                ``wait()``; on failure the pool is closed
``resize`` / ``check``    ``resize`` / ``check``
``drain()``               ``expire()``
``num_workers``           ``max_connecting`` (connects in parallel)
null pools                ``min_size=0, max_idle=0``: nothing kept idle
``get_stats()``           the core's counters, under psycopg_pool's names
========================  ==================================================

The connection handed out is the real ``psycopg.Connection`` (or
``connection_class``), as frameworks built on psycopg_pool expect, with
psycopg's own ``conn._pool`` hook pointing at the façade pool while it is
out, so ``conn._pool.putconn(conn)`` (Django) and ``close_returns`` work.  So
there is no lease to refuse use after release: that protection is the
native pools'.  pgmarina's lease stays inside, in a dict keyed by the
connection, and is what goes back to the shell.

The ``check`` callback is psycopg_pool's: run on every connection handed
out, fresh ones too.  A connection that fails it is given back (rolled
back, or replaced if broken) and the caller tries again, backing off, until
its timeout.  Without ``check``, pgmarina's own rule applies: a connection
idle for more than two seconds is pinged before it is handed out.

Logs go to ``pgmarina.compat.psycopg_pool`` (pgmarina's logger tree), or,
once the application has set the ``psycopg.pool`` logger up (given it a
level or a handler, or given ``psycopg`` a handler), to ``psycopg.pool``:
each record once, where its reader looks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Mapping
from operator import attrgetter
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

import psycopg
from psycopg.pq import TransactionStatus

from .. import __version__ as _pgmarina_version
from .. import errors as _errors
from .._lease import Lease
from .._redact import scrub
from ..adapters.base import with_connect_timeout
from ..adapters.psycopg import (
    _CONNECT_OPTIONS,
    AsyncPsycopgAdapter,
    PsycopgAdapter,
    _conninfo_problem,
)
from ..shells._common import DEFAULT, with_defaults
from ..shells.aio import AsyncPool
from ..shells.threaded import Pool

__all__ = [
    "AsyncConnectionPool",
    "AsyncNullConnectionPool",
    "ConnectionPool",
    "NullConnectionPool",
    "PoolClosed",
    "PoolTimeout",
    "TooManyRequests",
    "__version__",
]

#: psycopg_pool's API level, then what serves it: a PEP 440 version that
#: compares as 3.3.0 for code that checks ``psycopg_pool.__version__``.
__version__ = f"3.3.0+pgmarina.{_pgmarina_version}"

CT = TypeVar("CT", bound="psycopg.Connection[Any]")
ACT = TypeVar("ACT", bound="psycopg.AsyncConnection[Any]")
_CP = TypeVar("_CP", bound="ConnectionPool[Any]")
_ACP = TypeVar("_ACP", bound="AsyncConnectionPool[Any]")

_blank = object.__new__
_IDLE = TransactionStatus.IDLE
_ACTIVE = TransactionStatus.ACTIVE
_UNKNOWN = TransactionStatus.UNKNOWN
_CONNECTION: Any = psycopg.Connection  # the defaults of connection_class
_ASYNC_CONNECTION: Any = psycopg.AsyncConnection
_PSYCOPG_3_3 = tuple(int(x) for x in psycopg.__version__.split(".")[:2]) >= (3, 3)

# ---------------------------------------------------------------------------
# errors


class PoolTimeout(psycopg.OperationalError, _errors.PoolTimeout):
    """No connection could be handed out in time, or the pool cannot connect.

    psycopg_pool's ``PoolTimeout`` (a ``psycopg.OperationalError``) and
    pgmarina's at once.  When the pool was failing to connect, ``__cause__``
    is the driver's error; with pgmarina's fail fast that comes before the
    timeout, as soon as the server has been unreachable for five seconds or
    has refused the pool's login.
    """


class PoolClosed(psycopg.OperationalError, _errors.PoolClosed):
    """The pool is not open yet, or already closed (psycopg_pool's and pgmarina's)."""


class TooManyRequests(psycopg.OperationalError, _errors.TooManyWaiters):
    """``max_waiting`` requests already wait; this one is refused at once."""


# ---------------------------------------------------------------------------
# logging

_OWN_LOG = logging.getLogger("pgmarina.compat.psycopg_pool")
_PSYCOPG_POOL_LOG = logging.getLogger("psycopg.pool")
_PSYCOPG_LOG = logging.getLogger("psycopg")

if TYPE_CHECKING:
    _AdapterBase = logging.LoggerAdapter[logging.Logger]
else:
    _AdapterBase = logging.LoggerAdapter


class _Bridge(_AdapterBase):
    """The façade pools' logger: ``psycopg.pool`` once the application set
    that logger (or ``psycopg``) up, else pgmarina's tree.  Never both, so
    a record reaches the root handlers once."""

    def __init__(self) -> None:
        super().__init__(_OWN_LOG, {})

    @staticmethod
    def target() -> logging.Logger:
        # psycopg itself sets its logger's level at import: only a handler
        # there says the application set it up.
        if _PSYCOPG_POOL_LOG.level or _PSYCOPG_POOL_LOG.handlers or _PSYCOPG_LOG.handlers:
            return _PSYCOPG_POOL_LOG
        return _OWN_LOG

    def isEnabledFor(self, level: int) -> bool:
        return self.target().isEnabledFor(level)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        target = self.target()
        if target.isEnabledFor(level):
            kwargs.setdefault("stacklevel", 3)  # the caller of debug()/warning()
            target.log(level, msg, *args, **kwargs)


_log = _Bridge()
_INFO = logging.INFO


def _info_on() -> bool:
    """Whether a per-request INFO record would go anywhere: checked on every
    request, so without the bridge's frame (an over-estimate is fine: the
    bridge decides)."""
    return _OWN_LOG.isEnabledFor(_INFO) or _PSYCOPG_POOL_LOG.isEnabledFor(_INFO)


# ---------------------------------------------------------------------------
# connecting as psycopg_pool does


def _class_origin(cls: Any) -> Any:
    # ``MyConnection[MyRow]`` is a typing alias; psycopg_pool takes those.
    return getattr(cls, "__origin__", cls)


def _check_connect_args(conninfo: Any, kwargs: Any, connection_class: Any, base: type) -> None:
    """TypeError/ValueError now, naming the argument, for what psycopg would refuse later."""
    origin = _class_origin(connection_class)
    if not (isinstance(origin, type) and issubclass(origin, base)):
        raise TypeError(
            f"connection_class must be a subclass of {base.__qualname__}, not {connection_class!r}"
        )
    if not (conninfo is None or isinstance(conninfo, str) or callable(conninfo)):
        raise TypeError(
            f"conninfo must be a str or a callable returning one, not {type(conninfo).__name__}"
        )
    if not (kwargs is None or isinstance(kwargs, Mapping) or callable(kwargs)):
        raise TypeError(
            f"kwargs must be a dict or a callable returning one, not {type(kwargs).__name__}"
        )
    if callable(conninfo) or callable(kwargs):
        return  # resolved at every connect: checked by psycopg then
    dsn = conninfo or ""
    problem = _conninfo_problem(dsn, {})
    if problem is not None:
        raise ValueError(
            f"conninfo is not a valid connection string: {scrub(problem, dsn, kwargs or {})}"
        )
    params = {k: v for k, v in (kwargs or {}).items() if k not in _CONNECT_OPTIONS}
    problem = _conninfo_problem(dsn, params)
    if problem is not None:
        raise TypeError(f"kwargs rejected by libpq: {scrub(problem, dsn, kwargs or {})}")


class _Connector:
    """What the façade's adapters share: the connect arguments, and the time spent connecting.

    Unlike pgmarina's own adapters, one of these belongs to one pool: it
    holds psycopg_pool's ``conninfo`` and ``kwargs``, which may be callables
    resolved at every connect.
    """

    def _setup(self, conninfo: Any, kwargs: Any, connection_class: Any) -> None:
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._class = connection_class
        self._time_lock = threading.Lock()
        self.connect_time = 0.0  # seconds spent in successful connects

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        pass  # the façade checked its own arguments, under their own names

    def _done(self, conn: Any, start: float) -> Any:
        with self._time_lock:
            self.connect_time += monotonic() - start
        # psycopg's hook: "this connection belongs to a pool, and is in it".
        # (psycopg warns about a connection dropped open unless it is set.)
        conn._pool = None
        return conn


class _SyncConnector(_Connector, PsycopgAdapter):
    def __init__(self, conninfo: Any, kwargs: Any, connection_class: Any) -> None:
        self._setup(conninfo, kwargs, connection_class)

    def connect(self, dsn: str | None, kwargs: Mapping[str, Any], timeout: float) -> Any:
        conninfo = self._conninfo() if callable(self._conninfo) else self._conninfo
        given = self._kwargs() if callable(self._kwargs) else self._kwargs
        kw = with_connect_timeout(conninfo, given or {}, timeout)
        start = monotonic()
        return self._done(self._class.connect(conninfo or "", **kw), start)


class _AsyncConnector(_Connector, AsyncPsycopgAdapter):
    def __init__(self, conninfo: Any, kwargs: Any, connection_class: Any) -> None:
        self._setup(conninfo, kwargs, connection_class)

    async def connect(self, dsn: str | None, kwargs: Mapping[str, Any]) -> Any:
        conninfo = await _resolve(self._conninfo)
        given = await _resolve(self._kwargs)
        start = monotonic()
        return self._done(await self._class.connect(conninfo or "", **(given or {})), start)


async def _resolve(source: Any) -> Any:
    """A value, or what a (sync or async) callable returns."""
    if not callable(source):
        return source
    value = source()
    if inspect.isawaitable(value):
        value = await value
    return value


class _ThreadShell(Pool):
    _log = _log
    _close_inline = True


class _AsyncShell(AsyncPool):
    _log = _log
    _close_inline = True


# ---------------------------------------------------------------------------
# what the sync and async pools share

_NEW, _OPEN, _CLOSED = "new", "open", "closed"
_UNLIMITED = 2**31 - 1  # a null pool's max_size=0, as the core's bound
_NULL_CONNECTING = 64  # a null pool without max_size: connects in parallel at most


def _size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")
    return value


def _status_name(status: int) -> str:
    try:
        return TransactionStatus(status).name
    except ValueError:  # pragma: no cover - libpq's codes are fixed
        return str(status)


class _Tally:
    """The few counters only the façade can keep (slow paths only)."""

    __slots__ = ("bad_returns", "internal", "lock", "refused")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.internal = 0  # shell acquires that were no request (check retries, wait())
        self.refused = 0  # requests failed before or outside the core's count
        self.bad_returns = 0  # connections given back broken

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


class _FacadeBase:
    """Arguments, state, stats and the words of errors and logs: no IO."""

    _shell_class: ClassVar[type[Pool] | type[AsyncPool]]
    _connector_class: ClassVar[type[_SyncConnector] | type[_AsyncConnector]]
    _connection_base: ClassVar[type]

    _shell: Any
    _min_size: int
    _max_size: int

    def _setup(
        self,
        conninfo: Any,
        *,
        connection_class: Any,
        kwargs: Any,
        min_size: Any,
        max_size: Any,
        configure: Any,
        check: Any,
        reset: Any,
        name: Any,
        close_returns: Any,
        timeout: Any,
        max_waiting: Any,
        max_lifetime: Any,
        max_idle: Any,
        reconnect_timeout: Any,
        reconnect_failed: Any,
        num_workers: Any,
    ) -> None:
        min_size, max_size = self._check_sizes(min_size, max_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int):
            raise TypeError(f"num_workers must be an int, not {type(num_workers).__name__}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if not isinstance(close_returns, bool):
            raise TypeError(f"close_returns must be a bool, not {type(close_returns).__name__}")
        _check_connect_args(conninfo, kwargs, connection_class, self._connection_base)
        if close_returns and not _PSYCOPG_3_3:  # pragma: no cover - psycopg < 3.3
            connection_class = _returning_class(connection_class, self._connection_base)
        self._check = _callable("check", check)
        _callable("configure", configure)
        _callable("reset", reset)
        _callable("reconnect_failed", reconnect_failed)

        self.conninfo = conninfo
        self.kwargs = kwargs
        self.connection_class = connection_class
        self.close_returns = close_returns
        self._min_size = min_size
        self._max_size = max_size
        self._max_waiting = max_waiting
        self._max_lifetime = max_lifetime
        self._max_idle = max_idle
        self._reconnect_timeout = reconnect_timeout
        self._num_workers = num_workers
        self._connector = self._connector_class(conninfo, kwargs, connection_class)
        me = weakref.ref(self)
        settings = self._shell_settings(min_size, max_size, num_workers, max_idle)
        if check is not None:
            # The façade checks every connection it hands out; without a
            # check callback, pgmarina's check window applies instead.
            settings["check_window"] = None
        self._shell = self._shell_class(
            None,
            driver=self._connector,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            reconnect_timeout=reconnect_timeout,
            configure=None if configure is None else self._hook(me, configure, "configure"),
            reset="auto" if reset is None else self._hook(me, reset, "reset"),
            reconnect_failed=None if reconnect_failed is None else _told(me, reconnect_failed),
            name=name,
            **settings,
        )
        self.timeout = timeout
        self._leases: dict[int, Lease] = {}
        self._tally = _Tally()
        self._baseline: dict[str, float] = dict.fromkeys(_COUNTERS, 0.0)
        self._state = _NEW
        self._implicit = False  # opened by the constructor's default: warn once
        self._serving = False  # open, and no warning due: getconn's one test
        self._state_lock = threading.Lock()
        # psycopg's own connection block, unless connection_class changed it:
        # then its __enter__/__exit__ run as psycopg_pool runs them.
        origin = _class_origin(connection_class)
        self._plain_block = all(
            getattr(origin, hook, None) is getattr(self._connection_base, hook, None)
            for hook in ("__enter__", "__exit__", "__aenter__", "__aexit__")
        )

    # -- sizes --------------------------------------------------------------

    def _check_sizes(self, min_size: Any, max_size: Any) -> tuple[int, int]:
        min_size = _size("min_size", min_size)
        max_size = min_size if max_size is None else _size("max_size", max_size)
        if max_size < min_size:
            raise ValueError(
                f"max_size must be >= min_size, got max_size={max_size} and min_size={min_size}"
            )
        if max_size == 0:
            raise ValueError("with min_size=0, max_size must be more than 0")
        return min_size, max_size

    def _shell_settings(
        self, min_size: int, max_size: int, num_workers: int, max_idle: Any
    ) -> dict[str, Any]:
        return {
            "min_size": min_size,
            "max_size": max_size,
            "max_idle": max_idle,
            "max_connecting": num_workers,
        }

    def _shell_sizes(self, min_size: int, max_size: int) -> tuple[int, int]:
        return min_size, max_size

    # -- hooks ----------------------------------------------------------------

    @staticmethod
    def _hook(me: weakref.ref[Any], fn: Callable[..., Any], what: str) -> Callable[..., Any]:
        raise NotImplementedError

    # -- attributes -----------------------------------------------------------

    @property
    def name(self) -> str:
        """The pool's name, given or ``pool-N``."""
        return str(self._shell.name)

    @property
    def min_size(self) -> int:
        return self._min_size

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def closed(self) -> bool:
        """``True`` before ``open()`` and after ``close()``, as in psycopg_pool."""
        return self._state is not _OPEN

    @property
    def timeout(self) -> float:
        """The default ``getconn()``/``connection()`` timeout; may be changed."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._shell._check_timeout(value)  # raises TypeError/ValueError naming it
        self._timeout = value
        # The shell's own default when unchanged: it skips a check per call.
        self._timeout_arg = DEFAULT if value == self._shell.timeout else value

    @property
    def max_waiting(self) -> int:
        return int(self._max_waiting)

    @property
    def max_lifetime(self) -> float:
        return cast(float, self._max_lifetime)

    @property
    def max_idle(self) -> float:
        return cast(float, self._max_idle)

    @property
    def reconnect_timeout(self) -> float:
        return cast(float, self._reconnect_timeout)

    @property
    def num_workers(self) -> int:
        return self._num_workers

    def __repr__(self) -> str:
        s = self._shell.stats()
        return (
            f"<{type(self).__module__}.{type(self).__qualname__} {self.name!r} {self._state} "
            f"| size {s.size}/{self._max_size}: {s.idle} idle, {s.in_use} in use, "
            f"{s.waiting} waiting>"
        )

    # -- state ----------------------------------------------------------------

    def _not_serving(self) -> None:
        """Raise, or warn once, for a getconn() or wait() on a pool not plainly open."""
        state = self._state
        if state is _CLOSED:
            self._tally.add("refused")
            raise PoolClosed(f"the pool {self.name!r} is already closed")
        if state is _NEW:
            self._tally.add("refused")
            raise PoolClosed(f"the pool {self.name!r} is not open yet")
        self._serving = True
        if self._implicit:
            self._implicit = False
            self._warn_implicit()

    def _warn_implicit(self) -> None:
        cls = type(self).__name__
        warnings.warn(
            f"{cls} was opened by its constructor because 'open' was not given; "
            f"psycopg_pool will stop doing that: pass open=True, or open=False and call "
            f"open(), or use 'with {cls}(...) as pool:'",
            DeprecationWarning,
            stacklevel=4,
        )

    def _begin_open(self) -> bool:
        """Under the state lock: ``True`` if the shell must be started now."""
        if self._state is _CLOSED:
            raise PoolClosed(
                f"the pool {self.name!r} has already been opened and closed; "
                "it cannot be reopened (make a new one)"
            )
        if self._state is _OPEN:
            return False
        self._state = _OPEN
        self._serving = not self._implicit
        return True

    def _begin_close(self) -> bool:
        """Under the state lock: ``True`` if the shell must be closed now."""
        if self._state is not _OPEN:
            return False  # never opened: it still may be; or closed already
        self._state = _CLOSED
        self._serving = False
        return True

    # -- lending ------------------------------------------------------------

    def _lend(self, lease: Any) -> Any:
        """Hand out the lease's connection: the lease stays here, keyed by it,
        and psycopg's hook names this pool as its owner while it is out."""
        conn = lease._con
        self._leases[id(conn)] = lease
        conn._pool = self
        return conn

    def _take_back(self, conn: Any) -> tuple[Any, int | None]:
        """``putconn``'s bookkeeping: the lease, and the status for the shell.

        Raises:
            ValueError: ``conn`` is not out of this pool.
        """
        lease = self._leases.pop(id(conn), None)
        if lease is None or lease._con is not conn:
            if lease is not None:  # pragma: no cover - ids are unique while lent
                self._leases[id(conn)] = lease
            raise self._not_mine(conn)
        conn._pool = None
        status = _libpq_status(conn)
        if status:
            self._returned_dirty(conn, status)
        if _info_on():
            _log.info("returning connection to %r", self.name)
        return lease, None if status else 0  # libpq's IDLE is the shell's CLEAN

    # -- errors ---------------------------------------------------------------

    def _refused(self, exc: _errors.PoolError) -> Exception:
        """psycopg_pool's error for one the shell raised (same words, its class)."""
        msg = str(exc)
        if not msg.startswith(self.name):
            msg = f"{self.name}: {msg}"
        out: Exception
        if isinstance(exc, _errors.TooManyWaiters):
            out = TooManyRequests(
                f"the pool {self.name!r} has already {self._shell.stats().waiting} requests "
                f"waiting (max_waiting={self.max_waiting})"
            )
        elif isinstance(exc, _errors.PoolTimeout):
            out = PoolTimeout(msg)
        elif isinstance(exc, _errors.PoolConnectError):
            self._tally.add("refused")
            out = PoolTimeout(msg)
        elif isinstance(exc, (_errors.PoolClosed, _errors.PoolNotOpen)):
            self._tally.add("refused")
            out = PoolClosed(f"the pool {self.name!r} is closed")
        else:
            return exc
        return out  # raised "from exc.__cause__": the driver's error, if any

    def _not_mine(self, conn: Any) -> ValueError:
        owner = getattr(conn, "_pool", None)
        if owner is not None and owner is not self:
            why = f"it comes from pool {getattr(owner, 'name', owner)!r}"
        else:
            why = "it doesn't come from it, or was given back already"
        return ValueError(f"can't return connection to pool {self.name!r}, {why}: {conn}")

    def _returned_dirty(self, conn: Any, status: int) -> None:
        """Log (and count) a connection given back not idle; the shell cleans it."""
        if status == _UNKNOWN:
            self._tally.add("bad_returns")
            _log.warning("discarding a connection given back broken or closed: %s", conn)
        elif status == _ACTIVE:
            _log.warning(
                "closing a connection given back in the middle of an operation (ACTIVE): %s", conn
            )
        else:
            _log.warning(
                "rolling back a connection given back in a transaction (%s): %s",
                _status_name(status),
                conn,
            )

    # -- the check loop's pace ----------------------------------------------

    def _check_window(self, timeout: float | None) -> tuple[float, float | None]:
        """When the check loop starts, and its deadline (``None``: no limit)."""
        start = monotonic()
        wait = self._timeout if timeout is None else timeout
        return start, None if wait is None else start + wait

    def _check_failed(self, conn: Any, exc: Exception) -> None:
        """Note a connection that failed ``check`` (it goes back to the pool next)."""
        conn._pool = None
        _log.info("connection failed check: %s", exc)
        self._tally.add("internal")

    def _check_time_left(
        self, start: float, deadline: float | None, last: Exception
    ) -> float | None:
        """What is left of the check loop's time after a pause; none left is a timeout.

        Raises:
            PoolTimeout: the deadline passed (``last``, the failure, is its cause).
        """
        left = None if deadline is None else deadline - monotonic()
        if left is not None and left <= 0:
            raise self._check_timed_out(start, last) from last
        return left

    def _check_delay(self, failures: int, deadline: float | None) -> float:
        """Pause before checking again: none after the first failure, then the
        pool's connect backoff (doubling, jittered), never past the deadline."""
        if failures <= 1:
            return 0.0
        config = self._shell._config
        delay: float = min(config.backoff_max, config.backoff_initial * 2.0 ** (failures - 2))
        delay *= 0.5 + 0.5 * random.random()
        if deadline is not None:
            delay = max(0.0, min(delay, deadline - monotonic()))
        return delay

    def _check_timed_out(self, start: float, last: BaseException) -> PoolTimeout:
        self._tally.add("refused")
        exc = PoolTimeout(
            f"{self.name}: no connection passed the check within {monotonic() - start:.3g}s "
            f"(last failure: {type(last).__name__}: {last})"
        )
        exc.__cause__ = last
        return exc

    # -- stats ----------------------------------------------------------------

    def _totals(self) -> dict[str, float]:
        s = self._shell.stats()
        t = self._tally
        return {
            "requests_num": s.acquires + s.timeouts + s.too_many_waiters + t.refused - t.internal,
            "requests_queued": s.waited_acquires,
            "requests_wait_ms": 1000.0 * s.wait_time_total,
            "requests_errors": s.timeouts + s.too_many_waiters + t.refused,
            "usage_ms": 1000.0 * s.usage_time_total,
            "returns_bad": t.bad_returns,
            "connections_num": s.connections_opened + s.connections_failed,
            "connections_ms": 1000.0 * self._connector.connect_time,
            "connections_errors": s.connections_failed,
            "connections_lost": max(0, s.connections_lost - t.bad_returns),
        }

    def _measures(self) -> dict[str, int]:
        s = self._shell.stats()
        return {
            "pool_min": self._min_size,
            "pool_max": self._max_size,
            "pool_size": s.size,
            "pool_available": s.idle,
            "requests_waiting": s.waiting,
        }

    def get_stats(self) -> dict[str, int]:
        """Counters since creation (or the last ``pop_stats()``) and sizes now.

        The names are psycopg_pool's; every key is always present.
        """
        with self._tally.lock:
            totals = self._totals()
            base = self._baseline
        stats = {k: int(v - base[k]) for k, v in totals.items()}
        stats.update(self._measures())
        return stats

    def pop_stats(self) -> dict[str, int]:
        """As ``get_stats()``, then start the counters again from zero."""
        with self._tally.lock:
            totals = self._totals()
            base, self._baseline = self._baseline, totals
        stats = {k: int(v - base[k]) for k, v in totals.items()}
        stats.update(self._measures())
        return stats


_COUNTERS = (
    "requests_num",
    "requests_queued",
    "requests_wait_ms",
    "requests_errors",
    "usage_ms",
    "returns_bad",
    "connections_num",
    "connections_ms",
    "connections_errors",
    "connections_lost",
)


def _told(me: weakref.ref[Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    """``reconnect_failed(pool)`` is given the façade pool, not the shell."""

    def reconnect_failed(_shell: Any) -> Any:
        pool = me()
        if pool is not None:
            return fn(pool)
        return None

    return reconnect_failed


def _left_not_idle(conn: Any, what: str, fn: Any) -> psycopg.ProgrammingError:
    status = _status_name(conn.pgconn.transaction_status)
    return psycopg.ProgrammingError(
        f"{what} {getattr(fn, '__qualname__', fn)!r} left the connection {status}, "
        f"not idle: it was discarded (commit or roll back inside {what})"
    )


def _returning_class(cls: Any, base: type) -> Any:  # pragma: no cover - psycopg < 3.3
    """psycopg < 3.3 has no close_returns: a Connection whose close() gives it back."""
    if cls is not base:
        raise TypeError(
            "close_returns=True with a connection_class of your own needs psycopg 3.3 or newer"
        )
    if base is psycopg.Connection:

        class ReturningConnection(psycopg.Connection[Any]):
            def close(self) -> None:
                pool = getattr(self, "_pool", None)
                if pool is not None:
                    pool.putconn(self)
                else:
                    super().close()

        return ReturningConnection

    class AsyncReturningConnection(psycopg.AsyncConnection[Any]):
        async def close(self) -> None:
            pool = getattr(self, "_pool", None)
            if pool is not None:
                await pool.putconn(self)
            else:
                await super().close()

    return AsyncReturningConnection


# libpq's transaction status, read with no Python frame: 0 is IDLE.
_libpq_status: Callable[[Any], int] = attrgetter("pgconn.transaction_status")


# ---------------------------------------------------------------------------
# the thread pools


class ConnectionPool(_FacadeBase, Generic[CT]):
    """A thread-safe pool of ``psycopg.Connection`` (psycopg_pool's API on pgmarina).

    Args:
        conninfo: The connection string, or a callable returning one
            (called at every connect).
        connection_class: The class of the connections served.
        kwargs: Keywords for ``connection_class.connect()``, or a callable
            returning them.
        min_size: Connections kept open.
        max_size: The most connections (``None``: ``min_size``).
        open: Open in the constructor (``None``, the default, does and
            warns at first use; pass ``True`` or ``False``).
        configure: ``configure(conn)`` on each new connection; it must leave
            the connection idle (no transaction).
        check: ``check(conn)`` on every connection before it is handed out;
            raising rejects it (``check_connection`` is a ready-made one).
        reset: ``reset(conn)`` on every connection given back, after the
            rollback; it must leave the connection idle.
        name: Name for logs and ``repr`` (``pool-N`` by default).
        close_returns: ``conn.close()`` gives the connection back instead.
        timeout: Default seconds ``getconn()``/``connection()`` may wait.
        max_waiting: Most requests waiting at once (``0``: no limit); more
            raise ``TooManyRequests``.
        max_lifetime: Seconds after which a connection is replaced (up to a
            tenth less, at random, so they do not all go at once).
        max_idle: Seconds after which an idle connection above ``min_size``
            is closed.
        reconnect_timeout: After failing to connect for this long,
            ``reconnect_failed(pool)`` is called (the pool keeps trying).
        reconnect_failed: See ``reconnect_timeout``.
        num_workers: Connects run in parallel at most.

    Raises:
        TypeError: An argument has the wrong type (the message names it).
        ValueError: An argument has a wrong value (the message names it).
    """

    _shell_class = _ThreadShell
    _connector_class = _SyncConnector
    _connection_base = psycopg.Connection
    _shell: Pool

    def __init__(
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        connection_class: type[CT] = _CONNECTION,
        kwargs: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        min_size: int = 4,
        max_size: int | None = None,
        open: bool | None = None,
        configure: Callable[[CT], None] | None = None,
        check: Callable[[CT], None] | None = None,
        reset: Callable[[CT], None] | None = None,
        name: str | None = None,
        close_returns: bool = False,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: Callable[[ConnectionPool[Any]], None] | None = None,
        num_workers: int = 3,
    ) -> None:
        if open is not None and not isinstance(open, bool):
            raise TypeError(f"open must be a bool or None, not {type(open).__name__}")
        self._setup(
            conninfo,
            connection_class=connection_class,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            configure=configure,
            check=check,
            reset=reset,
            name=name,
            close_returns=close_returns,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            reconnect_timeout=reconnect_timeout,
            reconnect_failed=reconnect_failed,
            num_workers=num_workers,
        )
        self._acquire = self._shell.acquire
        self._release = self._shell.release
        # The shell's release given the status just read, as its own block end does.
        self._return = self._shell._return
        if open is None:
            self._implicit = True
        if open is None or open:
            self.open()

    @staticmethod
    def _hook(me: weakref.ref[Any], fn: Callable[..., Any], what: str) -> Callable[..., Any]:
        """``configure``/``reset`` as psycopg_pool runs them: with ``conn._pool``
        set meanwhile, and refusing a connection left in a transaction."""

        def hook(conn: Any) -> None:
            conn._pool = me()
            try:
                fn(conn)
            finally:
                conn._pool = None
            if conn.pgconn.transaction_status != _IDLE:
                raise _left_not_idle(conn, what, fn)

        return hook

    # -- open / close -----------------------------------------------------------

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Start connecting and serving; a pool already open is left as it is.

        Args:
            wait: Also wait (see :meth:`wait`) for ``min_size`` connections.
            timeout: How long ``wait`` may take.

        Raises:
            PoolClosed: The pool was closed: pools do not reopen.
            PoolTimeout: ``wait`` was asked for and failed (the pool is closed).
        """
        with self._state_lock:
            start = self._begin_open()
            if start:
                self._shell.open()
        if wait:
            self.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Close: refuse new requests, fail the waiting ones, close idle connections.

        Connections in use are closed when they are given back.  ``timeout``
        bounds the wait for connects still in flight.
        """
        with self._state_lock:
            if not self._begin_close():
                return
        self._shell.close(timeout, wait=False)

    def __enter__(self: _CP) -> _CP:
        self._implicit = False
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until ``min_size`` connections are open.

        Raises:
            PoolTimeout: Not ready within ``timeout``, or the pool cannot
                connect; the pool is closed first.
            PoolClosed: The pool is not open.
        """
        self._not_serving()
        _log.info("waiting for pool %r initialization", self.name)
        try:
            self._wait(timeout)
        except (_errors.PoolTimeout, _errors.PoolConnectError) as exc:
            self.close()
            raise PoolTimeout(
                f"pool initialization incomplete after {timeout} sec: {exc}"
            ) from exc.__cause__
        except _errors.PoolError as exc:
            raise self._refused(exc) from exc.__cause__
        _log.info("pool %r is ready to use", self.name)

    def _wait(self, timeout: float) -> None:
        self._shell.wait(timeout)

    # -- getconn / putconn --------------------------------------------------------

    def getconn(self, timeout: float | None = None) -> CT:
        """A connection, for ``putconn()``; prefer :meth:`connection`.

        Raises:
            PoolTimeout: None in ``timeout`` (default: the pool's) seconds.
            TooManyRequests: ``max_waiting`` requests already wait.
            PoolClosed: The pool is not open.
        """
        if not self._serving:
            self._not_serving()
        info = _info_on()
        if info:
            _log.info("connection requested from %r", self.name)
        try:
            lease = self._acquire(timeout=self._timeout_arg if timeout is None else timeout)
        except _errors.PoolError as exc:
            raise self._refused(exc) from exc.__cause__
        if self._check is not None:
            lease = self._checked(lease, timeout)
        conn = self._lend(lease)
        if info:
            _log.info("connection given by %r", self.name)
        return cast(CT, conn)

    def _checked(self, lease: Any, timeout: float | None) -> Any:
        """Run ``check`` on the lease's connection until one passes (see module doc)."""
        start, deadline = self._check_window(timeout)
        check = self._check
        assert check is not None
        failures = 0
        while True:
            conn = lease._con
            conn._pool = self
            try:
                check(conn)
            except Exception as exc:
                self._check_failed(conn, exc)
                failures += 1
                self._release(lease)
                time.sleep(self._check_delay(failures, deadline))
                left = self._check_time_left(start, deadline, exc)
                try:
                    lease = self._acquire(timeout=left)
                except _errors.PoolError as err:
                    raise self._refused(err) from err.__cause__
                continue
            except BaseException:
                conn._pool = None
                self._release(lease)
                raise
            conn._pool = None
            return lease

    def putconn(self, conn: CT) -> None:
        """Give back a connection from ``getconn()``.

        Raises:
            ValueError: ``conn`` is not out of this pool.
        """
        self._return(*self._take_back(conn))

    def connection(self, timeout: float | None = None) -> _Connection[CT]:
        """``with pool.connection() as conn:`` lends a connection for the block.

        The block ends as psycopg's ``with conn:`` does: a commit, or a
        rollback if it raised; then the connection goes back to the pool.
        """
        # _Connection(self, timeout), without an __init__ frame: once per block.
        ctx: _Connection[CT] = _blank(_Connection)
        ctx._pool = self
        ctx._timeout = timeout
        ctx._conn = None
        return ctx

    # -- administration -----------------------------------------------------------

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change ``min_size`` and ``max_size`` (``None``: ``min_size``)."""
        lo, hi = self._check_sizes(min_size, max_size)
        _log.info("resizing %r to min_size=%s max_size=%s", self.name, lo, hi)
        self._shell.resize(*self._shell_sizes(lo, hi))
        self._min_size, self._max_size = lo, hi

    def check(self) -> None:
        """Ping every idle connection now; replace the broken ones."""
        before = self._shell.stats().connections_lost
        self._shell.check()
        lost = self._shell.stats().connections_lost - before
        if lost:
            _log.warning("discarding %d broken connection(s) found by check() in %r",
                         lost, self.name)

    def drain(self) -> None:
        """Replace every connection: idle ones now, ones in use when given back."""
        self._shell.expire()

    @staticmethod
    def check_connection(conn: CT) -> None:
        """Raise unless ``conn`` answers an empty query (run in autocommit).

        Fit to be the ``check`` callback: ``check=ConnectionPool.check_connection``.
        """
        _SYNC_PING.ping(conn)


class _Connection(Generic[CT]):
    """``pool.connection()``: getconn, psycopg's connection block, putconn."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: ConnectionPool[CT], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None

    def __enter__(self) -> CT:
        if self._conn is not None:
            raise RuntimeError("this pool.connection() context is already in use")
        pool = self._pool
        if pool._serving and pool._check is None and self._timeout is None and not _info_on():
            # getconn's common case, inline: once per block.
            try:
                lease = pool._acquire(timeout=pool._timeout_arg)
            except _errors.PoolError as exc:
                raise pool._refused(exc) from exc.__cause__
            conn = self._conn = pool._lend(lease)
        else:
            conn = self._conn = pool.getconn(self._timeout)
        if not pool._plain_block:
            try:
                conn.__enter__()
            except BaseException:
                self._conn = None
                pool.putconn(conn)
                raise
        return cast(CT, conn)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        pool = self._pool
        try:
            # psycopg's block end, skipped when it would do nothing: an idle
            # connection needs neither commit nor rollback.
            if _libpq_status(conn) or not pool._plain_block:
                conn.__exit__(exc_type, exc, tb)
        finally:
            pool._return(*pool._take_back(conn))  # putconn, inline


# ---------------------------------------------------------------------------
# the asyncio pools


class AsyncConnectionPool(_FacadeBase, Generic[ACT]):
    """An asyncio pool of ``psycopg.AsyncConnection``; see :class:`ConnectionPool`.

    The callbacks (``configure``, ``check``, ``reset``) are coroutine
    functions; ``reconnect_failed`` may be either.  Opening in the
    constructor (``open=True``, or ``open`` not given) needs a running
    event loop and warns: prefer ``open=False`` and ``await pool.open()``,
    or ``async with AsyncConnectionPool(...) as pool``.
    """

    _shell_class = _AsyncShell
    _connector_class = _AsyncConnector
    _connection_base = psycopg.AsyncConnection
    _shell: AsyncPool

    def __init__(
        self,
        conninfo: str | Callable[[], str] | Callable[[], Awaitable[str]] = "",
        *,
        connection_class: type[ACT] = _ASYNC_CONNECTION,
        kwargs: (
            dict[str, Any]
            | Callable[[], dict[str, Any]]
            | Callable[[], Awaitable[dict[str, Any]]]
            | None
        ) = None,
        min_size: int = 4,
        max_size: int | None = None,
        open: bool | None = None,
        configure: Callable[[ACT], Awaitable[None]] | None = None,
        check: Callable[[ACT], Awaitable[None]] | None = None,
        reset: Callable[[ACT], Awaitable[None]] | None = None,
        name: str | None = None,
        close_returns: bool = False,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: (
            Callable[[AsyncConnectionPool[Any]], None]
            | Callable[[AsyncConnectionPool[Any]], Awaitable[None]]
            | None
        ) = None,
        num_workers: int = 3,
    ) -> None:
        if open is not None and not isinstance(open, bool):
            raise TypeError(f"open must be a bool or None, not {type(open).__name__}")
        self._setup(
            conninfo,
            connection_class=connection_class,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            configure=configure,
            check=check,
            reset=reset,
            name=name,
            close_returns=close_returns,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            reconnect_timeout=reconnect_timeout,
            reconnect_failed=reconnect_failed,
            num_workers=num_workers,
        )
        self._acquire = self._shell.acquire
        self._release = self._shell.release
        # The shell's acquire and release in two steps, as its own block does:
        # what it can do without an await first.
        self._take = self._shell._take
        self._acquire_slow = self._shell._acquire_slow
        self._return = self._shell._return
        self._lease_class = self._shell._lease_class
        if open:
            self._warn_open_in_constructor()
        if open is None:
            self._implicit = True
        if open is None or open:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    f"{type(self).__name__} cannot open in its constructor without a running "
                    "event loop: pass open=False and 'await pool.open()' (or use 'async with')"
                ) from None
            self._open_now()

    def _warn_open_in_constructor(self) -> None:
        cls = type(self).__name__
        warnings.warn(
            f"opening {cls} in its constructor is deprecated by psycopg_pool: pass open=False "
            f"and 'await pool.open()', or use 'async with {cls}(...) as pool:'",
            RuntimeWarning,
            stacklevel=4,
        )

    def _warn_implicit(self) -> None:
        self._warn_open_in_constructor()

    @staticmethod
    def _hook(me: weakref.ref[Any], fn: Callable[..., Any], what: str) -> Callable[..., Any]:
        """See :meth:`ConnectionPool._hook`; ``fn`` may be a coroutine function."""

        async def hook(conn: Any) -> None:
            conn._pool = me()
            try:
                result = fn(conn)
                if inspect.isawaitable(result):
                    await result
            finally:
                conn._pool = None
            if conn.pgconn.transaction_status != _IDLE:
                raise _left_not_idle(conn, what, fn)

        return hook

    # -- open / close -----------------------------------------------------------

    def _open_now(self) -> None:
        if self._begin_open():
            self._shell._start()

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """See :meth:`ConnectionPool.open`."""
        self._open_now()
        if wait:
            await self.wait(timeout)

    async def close(self, timeout: float = 5.0) -> None:
        """See :meth:`ConnectionPool.close`."""
        if not self._begin_close():
            return
        await self._shell.close(timeout, wait=False)

    async def __aenter__(self: _ACP) -> _ACP:
        self._implicit = False
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait(self, timeout: float = 30.0) -> None:
        """See :meth:`ConnectionPool.wait`."""
        self._not_serving()
        _log.info("waiting for pool %r initialization", self.name)
        try:
            await self._wait(timeout)
        except (_errors.PoolTimeout, _errors.PoolConnectError) as exc:
            await self.close()
            raise PoolTimeout(
                f"pool initialization incomplete after {timeout} sec: {exc}"
            ) from exc.__cause__
        except _errors.PoolError as exc:
            raise self._refused(exc) from exc.__cause__
        _log.info("pool %r is ready to use", self.name)

    async def _wait(self, timeout: float) -> None:
        await self._shell.wait(timeout)

    # -- getconn / putconn --------------------------------------------------------

    async def getconn(self, timeout: float | None = None) -> ACT:
        """See :meth:`ConnectionPool.getconn`."""
        if not self._serving:
            self._not_serving()
        info = _info_on()
        if info:
            _log.info("connection requested from %r", self.name)
        if timeout is not None:
            self._shell._check_timeout(timeout)  # before anything is taken
        try:
            lease = self._take()
            if type(lease) is not self._lease_class:
                lease = await self._acquire_slow(
                    lease, self._timeout_arg if timeout is None else timeout
                )
        except _errors.PoolError as exc:
            raise self._refused(exc) from exc.__cause__
        if self._check is not None:
            lease = await self._checked(lease, timeout)
        conn = self._lend(lease)
        if info:
            _log.info("connection given by %r", self.name)
        return cast(ACT, conn)

    async def _checked(self, lease: Any, timeout: float | None) -> Any:
        """See :meth:`ConnectionPool._checked`."""
        start, deadline = self._check_window(timeout)
        check = self._check
        assert check is not None
        failures = 0
        while True:
            conn = lease._con
            conn._pool = self
            try:
                await check(conn)
            except Exception as exc:
                self._check_failed(conn, exc)
                failures += 1
                await self._release(lease)
                await asyncio.sleep(self._check_delay(failures, deadline))
                left = self._check_time_left(start, deadline, exc)
                try:
                    lease = await self._acquire(timeout=left)
                except _errors.PoolError as err:
                    raise self._refused(err) from err.__cause__
                continue
            except BaseException:
                conn._pool = None
                await self._release(lease)
                raise
            conn._pool = None
            return lease

    async def putconn(self, conn: ACT) -> None:
        """See :meth:`ConnectionPool.putconn`."""
        reset = self._return(*self._take_back(conn))
        if reset is not None:
            await reset

    def connection(self, timeout: float | None = None) -> _AsyncConnection[ACT]:
        """``async with pool.connection() as conn:``; see :meth:`ConnectionPool.connection`."""
        ctx: _AsyncConnection[ACT] = _blank(_AsyncConnection)  # as in ConnectionPool
        ctx._pool = self
        ctx._timeout = timeout
        ctx._conn = None
        return ctx

    # -- administration -----------------------------------------------------------

    async def resize(self, min_size: int, max_size: int | None = None) -> None:
        """See :meth:`ConnectionPool.resize`."""
        lo, hi = self._check_sizes(min_size, max_size)
        _log.info("resizing %r to min_size=%s max_size=%s", self.name, lo, hi)
        await self._shell.resize(*self._shell_sizes(lo, hi))
        self._min_size, self._max_size = lo, hi

    async def check(self) -> None:
        """See :meth:`ConnectionPool.check`."""
        before = self._shell.stats().connections_lost
        await self._shell.check()
        lost = self._shell.stats().connections_lost - before
        if lost:
            _log.warning("discarding %d broken connection(s) found by check() in %r",
                         lost, self.name)

    async def drain(self) -> None:
        """See :meth:`ConnectionPool.drain`."""
        await self._shell.expire()

    @staticmethod
    async def check_connection(conn: ACT) -> None:
        """See :meth:`ConnectionPool.check_connection`."""
        await _ASYNC_PING._in_autocommit(conn, "")


class _AsyncConnection(Generic[ACT]):
    """``pool.connection()``: getconn, psycopg's connection block, putconn."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: AsyncConnectionPool[ACT], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None

    async def __aenter__(self) -> ACT:
        if self._conn is not None:
            raise RuntimeError("this pool.connection() context is already in use")
        pool = self._pool
        if pool._serving and pool._check is None and self._timeout is None and not _info_on():
            # getconn's common case, inline (no coroutine of its own): once per block.
            try:
                lease = pool._take()
                if type(lease) is not pool._lease_class:
                    lease = await pool._acquire_slow(lease, pool._timeout_arg)
            except _errors.PoolError as exc:
                raise pool._refused(exc) from exc.__cause__
            conn = self._conn = pool._lend(lease)
        else:
            conn = self._conn = await pool.getconn(self._timeout)
        if not pool._plain_block:
            try:
                await conn.__aenter__()
            except BaseException:
                self._conn = None
                await pool.putconn(conn)
                raise
        return cast(ACT, conn)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        pool = self._pool
        try:
            if _libpq_status(conn) or not pool._plain_block:
                await conn.__aexit__(exc_type, exc, tb)
        finally:
            # putconn, inline (no coroutine of its own unless a reset is due).
            reset = pool._return(*pool._take_back(conn))
            if reset is not None:
                await reset


# ---------------------------------------------------------------------------
# null pools


class _NullSizes:
    """A null pool's sizes: ``min_size`` 0, ``max_size`` 0 or ``None`` for no limit.

    The shell gets ``min_size=0`` and ``max_idle=0``: it opens connections
    on demand, hands one given back to a request that waits, and closes it
    otherwise.
    """

    def _check_sizes(self, min_size: Any, max_size: Any) -> tuple[int, int]:
        min_size = _size("min_size", min_size)
        if min_size != 0:
            raise ValueError(f"null pools must have min_size=0, got {min_size}")
        max_size = 0 if max_size is None else _size("max_size", max_size)
        return 0, max_size

    def _shell_settings(
        self, min_size: int, max_size: int, num_workers: int, max_idle: Any
    ) -> dict[str, Any]:
        _lo, hi = self._shell_sizes(min_size, max_size)
        return {
            "min_size": 0,
            "max_size": hi,
            "max_idle": 0,  # psycopg_pool's max_idle is ignored: none is kept idle
            "max_connecting": max(num_workers, min(hi, _NULL_CONNECTING)),
        }

    def _shell_sizes(self, min_size: int, max_size: int) -> tuple[int, int]:
        return 0, max_size or _UNLIMITED


class NullConnectionPool(_NullSizes, ConnectionPool[CT]):
    """A :class:`ConnectionPool` that keeps no connection idle.

    Each request gets a new connection, unless it has to wait (``max_size``
    reached) and is then handed one given back (after the rollback and
    ``reset``); a connection given back with nobody waiting is closed.
    ``min_size`` must be 0; ``max_size`` 0 or ``None`` is no limit;
    ``max_idle`` is ignored.
    """

    # The same constructor, with a null pool's default: help() shows min_size=0.
    __init__ = with_defaults(ConnectionPool.__init__, min_size=0)

    def _wait(self, timeout: float) -> None:
        # Nothing to fill: one connection proves the server is there.
        self._tally.add("internal")
        self._release(self._acquire(timeout=timeout))

    def check(self) -> None:
        """Nothing to do: a null pool holds no idle connection."""


class AsyncNullConnectionPool(_NullSizes, AsyncConnectionPool[ACT]):
    """An :class:`AsyncConnectionPool` that keeps no connection idle; see
    :class:`NullConnectionPool`."""

    # The same constructor, with a null pool's default: help() shows min_size=0.
    __init__ = with_defaults(AsyncConnectionPool.__init__, min_size=0)

    async def _wait(self, timeout: float) -> None:
        self._tally.add("internal")
        await self._release(await self._acquire(timeout=timeout))

    async def check(self) -> None:
        """Nothing to do: a null pool holds no idle connection."""


_SYNC_PING = PsycopgAdapter()
_ASYNC_PING = AsyncPsycopgAdapter()
