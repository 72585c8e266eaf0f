"""What both shells share that is not IO: arguments, hooks, repr, stats.

The asyncio shell and the thread shell differ only in how they wait and how
they run IO; everything else about a pool is set up here, once.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import logging
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar, cast

from .._core import Budget, Entry, PoolConfig, PoolCore, PoolStats
from .._core.budget import GRANT
from .._core.config import LONGEST_WAIT, seconds
from .._core.hosts import READ_ONLY, READ_WRITE, HostBook
from .._lease import maker as lease_maker
from .._observe import LeakInfo, leak_info, register, traced
from .._redact import describe_error, describe_target, one_line
from ..adapters import BUSY, CLEAN, IN_TRANSACTION, AsyncAdapter, SyncAdapter, resolve
from ..errors import PoolConnectError, PoolError, PoolTimeout
from ._hosts import read_hosts

__all__ = [
    "AUTO",
    "CUSTOM",
    "DEFAULT",
    "ENTERING",
    "FULL",
    "NO_RESET",
    "ConfigureFailed",
    "ConnectionContextBase",
    "PoolBase",
    "RoleView",
    "logger",
    "with_defaults",
]

logger = logging.getLogger("pgmarina")

AUTO, FULL, NO_RESET, CUSTOM = "auto", "full", "none", "custom"
_names = itertools.count(1)
_blank = object.__new__
#: The settings' defaults, read by the constructor's signature: one source.
_D = PoolConfig()


class ConfigureFailed(Exception):
    """Internal, between a shell's connect and its connect loop: the new
    connection's ``configure`` hook raised ``error`` (or left the connection
    unusable), which the core may hand to a waiter (``configure_fails_waiter``)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class _Default:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<pool default>"


#: "Use the pool's setting" for per-call arguments such as ``timeout``.
DEFAULT: Any = _Default()

#: What a with-block context holds while its acquire waits: a second entry
#: meanwhile is refused as if the block were already running.
ENTERING: Any = object()


def _hook(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")
    return value


def _limit(name: str, value: Any) -> float:
    """``connect_timeout``/``reset_timeout``: more than 0; ``inf`` is no limit."""
    checked = seconds(name, value, positive=True, waited=True)
    assert checked is not None
    return checked


def _timeout(value: Any) -> float | None:
    """A per-call ``timeout``: ``None`` (or ``inf``, or 30 days and up) is no limit."""
    return seconds("timeout", value, nullable=True, waited=True)


class PoolBase:
    """Construction, validation, ``repr`` and ``stats`` shared by both shells."""

    _sync: ClassVar[bool]

    #: The driver used when ``driver`` is not given.
    _default_driver: ClassVar[str]

    #: Where this pool logs.  A compat façade's pools log where its peer's
    #: users look (``pgmarina.compat.psycopg_pool`` bridges to ``psycopg.pool``).
    _log: ClassVar[logging.Logger | logging.LoggerAdapter[Any]] = logger

    #: An integration's acquire (``_lend``) that waits while the pool has room
    #: to connect for it waits up to ``connect_timeout`` at least, whatever
    #: the pool's ``timeout``: SQLAlchemy's ``pool_timeout`` bounds only the
    #: wait for a busy pool's connection to come back (its checkout connects by
    #: itself), and ``pool_timeout=0`` must still connect.  Its pool sets this.
    _lend_waits_for_connect = False

    #: Close a retired connection in the thread or task that retired it (its
    #: release, its checkout, ``close()``), not in the background.  psycopg_pool
    #: users expect a connection given back to a closed or a null pool to be
    #: closed by the time ``putconn`` returns; its compat façade sets this.
    _close_inline: ClassVar[bool] = False

    # Slots for what every acquire and release reads: past 30 attributes an
    # instance ``__dict__`` loses part of CPython's fast attribute access (see
    # PoolCore).  ``__dict__`` stays for subclasses and what is set lazily.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_adapter",
        "_check",
        "_clean_release",
        "_closed",
        "_config",
        "_configure",
        "_connect_kwargs",
        "_connect_timeout",
        "_core",
        "_dsn",
        "_hosts",
        "_housekeeper",
        "_is_closed",
        "_lease_class",
        "_new_lease",
        "_on_leak",
        "_opened",
        "_quick_status",
        "_reconnect_failed",
        "_reset_hook",
        "_reset_mode",
        "_reset_timeout",
        "_status",
        "_target",
        "_transactional",
        "_views",
        "_watchdog",
        "name",
    )

    def __init__(
        self,
        dsn: str | None = None,
        *,
        driver: str | AsyncAdapter | SyncAdapter | None = None,
        min_size: int = _D.min_size,
        max_size: int | None = None,
        timeout: float | None = _D.timeout,
        max_waiting: int = _D.max_waiting,
        max_lifetime: float | None = _D.max_lifetime,
        max_idle: float | None = _D.max_idle,
        max_uses: int = _D.max_uses,
        check_window: float | None = _D.check_window,
        keepalive: float | None = _D.keepalive,
        max_connecting: int = _D.max_connecting,
        reconnect_timeout: float = _D.reconnect_timeout,
        fail_fast_after: float | None = _D.fail_fast_after,
        fail_fast_waiters: bool = _D.fail_fast_waiters,
        configure_fails_waiter: bool = _D.configure_fails_waiter,
        prefill: bool = _D.prefill,
        housekeeping_interval: float = _D.housekeeping_interval,
        lifetime_jitter: float = _D.lifetime_jitter,
        backoff_initial: float = _D.backoff_initial,
        backoff_max: float = _D.backoff_max,
        barge_window: float = _D.barge_window,
        idle_order: str = _D.idle_order,
        connect_timeout: float = 10.0,
        reset_timeout: float = 5.0,
        reset: str | Callable[..., Any] | None = "auto",
        configure: Callable[..., Any] | None = None,
        check: Callable[..., Any] | None = None,
        reconnect_failed: Callable[..., Any] | None = None,
        # PgBouncer (Scale-out issue)
        pgbouncer: bool = _D.pgbouncer,
        # leak detection (issue 15, observability)
        leak_timeout: float | None = _D.leak_timeout,
        on_leak: Callable[..., Any] | None = None,
        # several hosts (issue 13): see RoleView and pgmarina._core.hosts
        hosts: Sequence[str | tuple[str, int | None]] | None = None,
        target_session_attrs: str | None = None,
        load_balance_hosts: str | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **driver_kwargs: Any,
    ) -> None:
        """Set the pool up; nothing connects before ``open()``.

        Every pool setting is a keyword with its default shown here (the
        :class:`~pgmarina._core.PoolConfig` defaults: one place; a shell with
        a default of its own shows it, see :func:`with_defaults`).  See the
        shell's class docstring for what each does.  Keywords that are not
        pool settings go to the driver's connect, merged with
        ``connect_kwargs``; a misspelt setting (``max_sise=5``) is refused
        at once with a ``TypeError`` naming it, since no driver takes it.
        """
        if dsn is not None and not isinstance(dsn, str):
            raise TypeError(f"dsn must be a str or None, not {type(dsn).__name__}")
        if max_size is None:
            max_size = max(min_size, _D.max_size) if isinstance(min_size, int) else _D.max_size
        self._config = PoolConfig(
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            max_uses=max_uses,
            check_window=check_window,
            keepalive=keepalive,
            max_connecting=max_connecting,
            reconnect_timeout=reconnect_timeout,
            fail_fast_after=fail_fast_after,
            fail_fast_waiters=fail_fast_waiters,
            configure_fails_waiter=configure_fails_waiter,
            prefill=prefill,
            housekeeping_interval=housekeeping_interval,
            lifetime_jitter=lifetime_jitter,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            barge_window=barge_window,
            idle_order=idle_order,
            pgbouncer=pgbouncer,
            leak_timeout=leak_timeout,
        )
        # ``inf`` when there is no limit: asyncio takes it as it is, and the
        # thread shell arms no watchdog and sets no libpq connect_timeout.
        self._connect_timeout = _limit("connect_timeout", connect_timeout)
        self._reset_timeout = _limit("reset_timeout", reset_timeout)
        if connect_kwargs is not None and not isinstance(connect_kwargs, Mapping):
            raise TypeError(
                f"connect_kwargs must be a mapping, not {type(connect_kwargs).__name__}"
            )
        ckw = dict(connect_kwargs or {})
        overlap = ckw.keys() & driver_kwargs.keys()
        if overlap:
            raise TypeError(f"connect keyword given twice: {', '.join(sorted(overlap))}")
        ckw.update(driver_kwargs)
        self._adapter = adapter = resolve(
            self._default_driver if driver is None else driver, sync=self._sync
        )
        spec = read_hosts(dsn, hosts, target_session_attrs, load_balance_hosts, ckw)
        #: The hosts of a pool over several servers, else ``None`` (and
        #: nothing of it on any path).
        self._hosts: HostBook | None = None
        if spec is None:
            _validate_connect_args(adapter, dsn, ckw, driver_kwargs)
        else:
            dsn = spec.dsn
            self._hosts = HostBook(
                spec.hosts, spec.target, balance=spec.balance,
                backoff_initial=self._config.backoff_initial,
                backoff_max=self._config.backoff_max,
            )
            _validate_connect_args(
                adapter, dsn, self._host_kwargs(ckw, *spec.hosts[0]), driver_kwargs
            )
        if pgbouncer:  # PgBouncer (Scale-out issue): the driver's side of it
            self._adapter = adapter = adapter.behind_pgbouncer()
            ckw = adapter.pgbouncer_kwargs(ckw)
        self._dsn = dsn
        self._connect_kwargs = ckw
        self._views: dict[str, RoleView] = {}
        if reset in ("auto", "full", None):
            self._reset_mode = {"auto": AUTO, "full": FULL, None: NO_RESET}[reset]
            self._reset_hook = None
        elif callable(reset):
            self._reset_mode = CUSTOM
            self._reset_hook = reset
        elif isinstance(reset, str):
            raise ValueError(f"reset must be 'auto', 'full', None or a callable, not {reset!r}")
        else:
            raise TypeError(
                f"reset must be 'auto', 'full', None or a callable, not {type(reset).__name__}"
            )
        if pgbouncer and self._reset_mode is FULL:
            # A session reset means nothing behind a transaction-mode bouncer,
            # so "full" does what "auto" does: end the transaction.
            self._reset_mode = AUTO
        #: A clean connection with nothing noted on its lease goes straight back
        #: (no reset round trip): read on every release.
        self._clean_release = self._reset_mode is AUTO or self._reset_mode is NO_RESET
        self._configure = _hook("configure", configure)
        self._check = _hook("check", check)
        self._reconnect_failed = _hook("reconnect_failed", reconnect_failed)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        self.name = name or f"pool-{next(_names)}"
        self._target = describe_target(dsn, ckw)
        if self._hosts is not None:  # every host, then the database as before
            _, slash, db = self._target.partition("/")
            self._target = ",".join(h.name for h in self._hosts.hosts) + slash + db
        self._lease_class = adapter.lease_class
        self._new_lease = lease_maker(adapter.lease_class)
        self._on_leak = _hook("on_leak", on_leak)
        if self._config.leak_timeout is not None:
            # Only then does a lease note its acquirer: off, acquire pays nothing.
            self._new_lease = traced(self._new_lease)
        # Bound once: the hot paths call these on every lease.
        self._is_closed = adapter.is_closed
        self._status = adapter.status
        self._quick_status = adapter.quick_status
        self._transactional = adapter.transactional_context
        self._core: PoolCore[Any] = PoolCore(
            self._config, self._wake, refuse=self._refuse, hosts=self._hosts
        )
        self._core.name = self.name
        register(self)  # for exporters; held weakly
        self._opened = False
        self._closed = False
        self._init_shell()

    def _set_connect_args(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        """Connect with ``dsn`` and ``kwargs`` from the next connect on.

        For façades whose peers can change them (asyncpg's
        ``set_connect_args``); open connections stay until they are replaced.
        The driver checks them now, as the constructor has it do.

        Raises:
            TypeError, ValueError: the driver refuses them.
        """
        if dsn is not None and not isinstance(dsn, str):
            raise TypeError(f"dsn must be a str or None, not {type(dsn).__name__}")
        ckw = dict(kwargs)
        _validate_connect_args(self._adapter, dsn, ckw, {})
        if self._config.pgbouncer:
            ckw = self._adapter.pgbouncer_kwargs(ckw)
        self._dsn, self._connect_kwargs = dsn, ckw
        self._target = describe_target(dsn, ckw)

    @staticmethod
    def _host_kwargs(kwargs: Mapping[str, Any], host: str, port: int | None) -> dict[str, Any]:
        """The connect keywords for one host of a multi-host pool."""
        out = dict(kwargs)
        out["host"] = host
        if port is not None:
            out["port"] = port
        return out

    def _kwargs_for(self, entry: Entry) -> Mapping[str, Any]:
        """The connect keywords for ``entry``'s connect (its host's, if it has one)."""
        host = entry.host
        if host is None:
            return self._connect_kwargs
        return self._host_kwargs(self._connect_kwargs, host.address, host.port)

    def _view(self, want: str) -> RoleView:
        if self._hosts is None:
            raise PoolError(
                f"{self.name} has one host and does not look at roles: give it hosts=[...] "
                "(or target_session_attrs=...) to use pool.reader and pool.writer"
            )
        view = self._views.get(want)
        if view is None:
            view = self._views[want] = RoleView(self, want)
        return view

    @property
    def writer(self) -> RoleView:
        """Acquires that only ever get a connection to a primary (several hosts).

        ``with pool.writer.connection() as conn:`` (``async with`` for
        :class:`~pgmarina.AsyncPool`).

        Raises:
            PoolError: the pool has one host and no ``target_session_attrs``.
        """
        return self._view(READ_WRITE)

    @property
    def reader(self) -> RoleView:
        """Acquires that get a healthy standby, else the primary (several hosts).

        Raises:
            PoolError: the pool has one host and no ``target_session_attrs``.
        """
        return self._view(READ_ONLY)

    def _init_shell(self) -> None:
        """The shell's own set-up, once the settings are checked."""
        raise NotImplementedError

    # -- registry budget (pgmarina.registry): called only on connect/close paths

    def _join_budget(self, budget: Budget) -> None:
        """Draw this pool's connections from ``budget`` (before ``open()``)."""
        budget.join(self._core, self._budget_poke)

    def _budget_poke(self, word: str) -> None:
        """Schedule :meth:`_budget_event` in this pool's own thread or loop."""
        raise NotImplementedError

    def _budget_event(self, word: str, now: float) -> None:
        """Carry out a budget poke (the caller holds the pool's lock, if any)."""
        core = self._core
        if word == GRANT:
            core.granted(now)
        else:
            ok = core.yield_idle(now)
            if core.permits is not None:
                core.permits.reclaimed(core, ok)

    def _wake(self, waiter: Any, entry: Entry | None) -> bool:
        raise NotImplementedError

    def _refuse(self, waiter: Any, error: PoolConnectError) -> bool:
        raise NotImplementedError

    # ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """``True`` once ``close()`` or ``terminate()`` began."""
        return self._closed

    @property
    def min_size(self) -> int:
        """Connections kept open even when idle (``resize()`` changes it)."""
        return self._core.config.min_size

    @property
    def max_size(self) -> int:
        """Most connections at once (``resize()`` changes it)."""
        return self._core.config.max_size

    @property
    def timeout(self) -> float | None:
        """The default acquire timeout in seconds (``None``: wait for ever)."""
        return self._config.timeout

    @property
    def driver(self) -> str:
        """The adapter's driver name (``"asyncpg"``, ``"psycopg"``…)."""
        return str(self._adapter.name)

    def stats(self) -> PoolStats:
        """A frozen snapshot of sizes and counters; see :class:`PoolStats`."""
        return self._core.stats()

    def _state_word(self) -> str:
        if self._closed:
            return "closed"
        return "open" if self._opened else "not open"

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<{type(self).__name__} {self.name!r} {self._adapter.name}@{self._target} "
            f"{self._state_word()} | size {s.size}/{s.max_size}: {s.idle} idle, "
            f"{s.in_use} in use, {s.waiting} waiting, {s.connecting} connecting>"
        )

    def _check_timeout(self, timeout: Any) -> float | None:
        if timeout is DEFAULT:
            return self._config.timeout
        # The common cases inline (NaN fails the comparison); the rest, and
        # every error message, in _timeout.
        if type(timeout) is float and 0.0 <= timeout < LONGEST_WAIT:
            return timeout
        if timeout is None:
            return None
        return _timeout(timeout)

    def _lend_timeout(self, room: bool) -> Any:
        """The timeout of an integration's acquire that must wait: the pool's,
        or (``_lend_waits_for_connect``, and ``room`` to connect for it) no
        less than ``connect_timeout``."""
        if not (room and self._lend_waits_for_connect):
            return DEFAULT
        timeout = self._config.timeout
        if timeout is None or self._connect_timeout == math.inf:
            return None
        return max(timeout, self._connect_timeout)

    # ------------------------------------------------------------------
    # pieces of the shells' IO paths that are not IO themselves

    def _fill_problem(self, start: float, seconds: float | None, now: float) -> Exception | None:
        """While ``wait()``-ing to fill: the error to raise now, if any."""
        core = self._core
        if seconds is not None and now - start >= seconds:
            exc: Exception = PoolTimeout(
                f"{self.name}: {core.size - core.connecting} of {core.fill_target} "
                f"connections open after {seconds:.3g}s{core.connect_trouble()}"
            )
        else:
            why = core.connect_refusal(now) if core.failing_since is not None else None
            if why is None:
                return None
            exc = PoolConnectError(f"{self.name}: {why}")
        exc.__cause__ = core.last_connect_error
        return exc

    def _failed_connect(self, exc: BaseException) -> tuple[BaseException, bool, bool]:
        """What a connect loop tells the core of a failed connect: the error
        itself (a hook's own, out of ``ConfigureFailed``), whether the
        connection was configured (``False``: the hook failed) and whether
        the server rejected it for good (only a connect can be rejected)."""
        if isinstance(exc, ConfigureFailed):
            return exc.error, False, False
        return exc, True, self._adapter.is_permanent(exc)

    def _check_configured(self, conn: Any) -> None:
        """Refuse a connection that ``configure`` left in a transaction (or broken)."""
        status = self._status(conn)
        if status != CLEAN:
            what = {IN_TRANSACTION: "in a transaction", BUSY: "running a query"}.get(
                status, "broken"
            )
            raise PoolError(
                f"{self.name}: configure left the new connection {what}; it was discarded "
                "(commit or roll back inside configure, or use autocommit)"
            )

    def _check_lease(self, conn: Any) -> None:
        """Raise unless ``conn`` is a lease handed out by this pool."""
        if type(conn) is not self._lease_class:
            raise TypeError(f"release() takes a connection leased from a pool, not {conn!r}")
        if conn._pool is not self:
            raise ValueError(f"{conn!r} belongs to another pool, not {self.name}")

    def _terminate_quietly(self, conn: Any) -> None:
        if conn is not None:
            try:
                self._adapter.terminate(conn)
            except Exception:  # pragma: no cover - best effort
                self._log.debug("%s: terminate failed", self.name, exc_info=True)

    def _log_connect_failed(
        self, exc: BaseException, delay: float | None, permanent: bool = False,
        again: bool = False,
    ) -> None:
        # ``again``: rejected before too.  A rejection is retried every
        # backoff_max for as long as it lasts; one warning says it, the
        # repeats go to debug (every caller gets the error anyway).
        self._log.log(
            logging.DEBUG if again and permanent else logging.WARNING,
            "%s: connect failed (%s)%s%s",
            self.name,
            describe_error(exc),
            "; the server rejected it, so callers fail at once" if permanent else "",
            "" if delay is None else f"; retrying in {delay * 1000:.0f} ms",
        )

    def _log_recovered(self, failed_for: float) -> None:
        # The WARNINGs of an outage end with this line, so that an operator
        # reading the log sees when (and whether) the pool came back.
        self._log.info(
            "%s: connected again after failing for %.1fs", self.name, failed_for
        )

    def _connect_timed_out(self) -> TimeoutError:
        """The error of a connect (and ``configure``) that overran ``connect_timeout``."""
        return TimeoutError(
            f"connect (and configure) timed out after {self._connect_timeout:g}s"
        )

    def _log_reset_failed(self, entry: Entry, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError) and not str(exc):
            # Drivers time out with a bare TimeoutError(): say what and how long.
            why = f"timed out after {self._reset_timeout:g}s (reset_timeout)"
        else:
            why = describe_error(exc)
        self._log.warning(
            "%s: reset of connection #%d failed (%s); discarding it", self.name, entry.id, why
        )

    def _log_check_failed(self, entry: Entry) -> None:
        self._log.info("%s: connection #%d failed its check; replacing it", self.name, entry.id)

    def _leak_infos(self, now: float) -> list[LeakInfo]:
        """The leases overdue now, described (call where the core may be touched)."""
        limit = self._config.leak_timeout
        assert limit is not None
        return [leak_info(self.name, e, now, limit) for e in self._core.overdue(now)]

    def _report_leaks(self, leaks: list[LeakInfo]) -> None:
        """One WARNING per leaked lease, then ``on_leak(info)`` if given."""
        for info in leaks:
            self._log.warning("%s", info.message())
            if self._on_leak is not None:
                try:
                    self._leak_callback_result(self._on_leak(info))
                except Exception:
                    self._log.exception("%s: on_leak callback raised", self.name)

    def _leak_callback_result(self, result: Any) -> None:
        """What ``on_leak`` returned; the asyncio shell runs an awaitable."""

    @staticmethod
    def _tick_weakly(ref: Callable[[], Any]) -> bool:
        """One housekeeping tick on a weakly held pool; ``False`` once it is gone."""
        pool = ref()
        if pool is None or pool._closed:
            return False
        try:
            pool._housekeeping_tick()
        except Exception:  # pragma: no cover - a bug; keep the pool alive
            pool._log.exception("%s: housekeeping failed", pool.name)
        return True

    @staticmethod
    def _check_close_timeout(timeout: Any) -> float | None:
        return _timeout(timeout)

    def _check_resize(self, min_size: Any, max_size: Any) -> tuple[int, int]:
        if max_size is None:
            max_size = max(min_size, self._core.config.max_size) if isinstance(
                min_size, int
            ) else min_size
        PoolConfig(min_size=min_size, max_size=max_size)  # validates both
        return min_size, max_size


_F = TypeVar("_F", bound=Callable[..., Any])


def with_defaults(init: _F, **defaults: Any) -> _F:
    """A copy of the constructor ``init`` with other defaults for some keywords.

    A shell whose default for a setting differs from
    :class:`~pgmarina._core.PoolConfig`'s (the thread ``Pool``'s
    ``barge_window``) takes such a copy of :meth:`PoolBase.__init__` as its
    own ``__init__``: the same code, only the keyword defaults differ, so the
    shell's signature (``help()``, ``inspect.signature``) shows the default
    it really uses, and the constructor is still written once.

    Raises:
        TypeError: a name is not a keyword of ``init``.
    """
    kwdefaults = dict(init.__kwdefaults__ or {})
    unknown = sorted(defaults.keys() - kwdefaults.keys())
    if unknown:
        raise TypeError(f"not a keyword of {init.__qualname__}: {', '.join(unknown)}")
    copy = types.FunctionType(
        init.__code__, init.__globals__, init.__name__, init.__defaults__, init.__closure__
    )
    copy.__kwdefaults__ = kwdefaults | defaults
    copy.__doc__ = init.__doc__
    copy.__annotations__ = dict(init.__annotations__)
    copy.__module__ = init.__module__
    return cast(_F, copy)


_C = TypeVar("_C", bound="ConnectionContextBase")


class ConnectionContextBase:
    """State of the context manager behind ``pool.connection()``."""

    __slots__ = ("_conn", "_pool", "_timeout")

    _conn: Any
    _pool: Any
    _timeout: Any

    @classmethod
    def made_for(cls: type[_C], pool: PoolBase, timeout: Any) -> _C:
        """A context for ``pool`` (``timeout`` checked now, not at entry).

        Made once per ``with`` block, so the slots are filled on a bare
        instance rather than through an ``__init__``.
        """
        if timeout is not DEFAULT:
            pool._check_timeout(timeout)
        ctx: _C = _blank(cls)
        ctx._pool = pool
        ctx._timeout = timeout
        ctx._conn = None
        return ctx

    def _in_use(self, method: str) -> PoolError:
        # Entering one context twice (nested, or shared between tasks or
        # threads) would lose track of the first connection.
        return PoolError(
            f"this {self._pool.name}.{method}() context is already in use; "
            f"call pool.{method}() once for each block"
        )


#: Every keyword a pool constructor takes, from its signature: for "did you
#: mean" hints when a keyword is neither a setting nor taken by the driver.
_POOL_KEYWORDS = tuple(
    name
    for name, p in inspect.signature(PoolBase.__init__).parameters.items()
    if p.kind is p.KEYWORD_ONLY
)


def _validate_connect_args(
    adapter: Any, dsn: str | None, kwargs: dict[str, Any], loose: Mapping[str, Any]
) -> None:
    """Let the driver check its connect arguments, naming a misspelt setting.

    ``loose`` are the keywords that were not pool settings.  One that looks
    like a setting (``max_sise``) and is the one the driver refuses is most
    likely a typo: say so, rather than pass on the driver's words about an
    unknown connection option.  Driver messages are made one line.
    """
    try:
        adapter.validate(dsn, kwargs)
    except (TypeError, ValueError) as exc:
        for key in loose:
            near = difflib.get_close_matches(key, _POOL_KEYWORDS, n=1)
            if near and _driver_takes(adapter, dsn, {k: v for k, v in kwargs.items() if k != key}):
                raise TypeError(
                    f"unexpected keyword argument {key!r} (did you mean {near[0]!r}?): it is "
                    f"not a pool setting, and {adapter.name}'s connect does not take it either"
                ) from None
        if len(exc.args) == 1 and isinstance(exc.args[0], str):
            exc.args = (one_line(exc.args[0]),)
        raise


def _driver_takes(adapter: Any, dsn: str | None, kwargs: dict[str, Any]) -> bool:
    try:
        adapter.validate(dsn, kwargs)
    except (TypeError, ValueError):
        return False
    return True


class RoleView:
    """``pool.reader`` / ``pool.writer``: the pool's acquires, bound to a role.

    ``pool.writer`` only ever hands out connections to a primary;
    ``pool.reader`` hands out connections to a healthy standby, else to the
    primary.  Leases come from the pool itself: give an acquired one back
    with ``pool.release(conn)`` (or the view's ``release``).  A view costs
    nothing until it is used, and plain ``pool.connection()`` is untouched.
    """

    __slots__ = ("_pool", "_want")

    def __init__(self, pool: Any, want: str) -> None:
        self._pool = pool
        self._want = want

    @property
    def role(self) -> str:
        """``"read-write"`` or ``"read-only"``."""
        return self._want

    def connection(self, *, timeout: float | None = DEFAULT) -> Any:
        """``pool.connection()`` for this role (the same commit/rollback rules)."""
        return self._pool._routed_connection(self._want, timeout)

    def acquire(self, *, timeout: float | None = DEFAULT) -> Any:
        """``pool.acquire()`` for this role: the lease (awaited, for ``AsyncPool``).

        Raises:
            PoolTimeout, TooManyWaiters, PoolConnectError, PoolClosed,
            PoolNotOpen: as ``pool.acquire()``.
            ValueError: the pool never connects to a server of this role
                (``pool.writer`` with ``target_session_attrs="standby"``).
        """
        return self._pool._acquire_for(self._want, timeout)

    def release(self, conn: Any) -> Any:
        """``pool.release(conn)``."""
        return self._pool.release(conn)

    def __repr__(self) -> str:
        return f"<RoleView {self._want} of {self._pool.name!r}>"
