"""What both shells share that is not IO: arguments, hooks, repr, stats.

The asyncio shell and the thread shell differ only in how they wait and how
they run IO; everything else about a pool is set up here, once.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from .._core import Entry, PoolConfig, PoolCore, PoolStats
from .._lease import maker as lease_maker
from .._redact import describe_target, redact
from ..adapters import BUSY, CLEAN, IN_TRANSACTION, resolve
from ..errors import PoolConnectError, PoolError, PoolTimeout

__all__ = [
    "AUTO",
    "CUSTOM",
    "DEFAULT",
    "FULL",
    "NO_RESET",
    "ConnectionContextBase",
    "PoolBase",
    "logger",
]

logger = logging.getLogger("pgmarina")

AUTO, FULL, NO_RESET, CUSTOM = "auto", "full", "none", "custom"
_names = itertools.count(1)
_blank = object.__new__


class _Default:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<pool default>"


#: "Use the pool's setting" for per-call arguments such as ``timeout``.
DEFAULT: Any = _Default()


def _hook(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")
    return value


def _seconds(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


class PoolBase:
    """Construction, validation, ``repr`` and ``stats`` shared by both shells."""

    _sync: ClassVar[bool]

    def __init__(
        self,
        dsn: str | None = None,
        *,
        driver: Any,
        min_size: int = 1,
        max_size: int | None = None,
        timeout: float | None = 30.0,
        max_waiting: int = 0,
        max_lifetime: float | None = 3600.0,
        max_idle: float | None = 600.0,
        max_uses: int = 0,
        check_window: float | None = 2.0,
        keepalive: float | None = 60.0,
        max_connecting: int = 2,
        reconnect_timeout: float = 300.0,
        fail_fast_after: float | None = 5.0,
        housekeeping_interval: float = 1.0,
        lifetime_jitter: float = 0.1,
        backoff_initial: float = 0.01,
        backoff_max: float = 1.0,
        barge_window: float = 0.0,
        connect_timeout: float = 10.0,
        reset_timeout: float = 5.0,
        reset: Any = "auto",
        configure: Callable[..., Any] | None = None,
        check: Callable[..., Any] | None = None,
        reconnect_failed: Callable[..., Any] | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if dsn is not None and not isinstance(dsn, str):
            raise TypeError(f"dsn must be a str or None, not {type(dsn).__name__}")
        if max_size is None:
            max_size = max(min_size, 10) if isinstance(min_size, int) else 10
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
            housekeeping_interval=housekeeping_interval,
            lifetime_jitter=lifetime_jitter,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            barge_window=barge_window,
        )
        self._connect_timeout: float = _seconds("connect_timeout", connect_timeout) or 0.0
        self._reset_timeout: float = _seconds("reset_timeout", reset_timeout) or 0.0
        if connect_kwargs is not None and not isinstance(connect_kwargs, Mapping):
            raise TypeError(
                f"connect_kwargs must be a mapping, not {type(connect_kwargs).__name__}"
            )
        ckw = dict(connect_kwargs or {})
        overlap = ckw.keys() & kwargs.keys()
        if overlap:
            raise TypeError(f"connect keyword given twice: {', '.join(sorted(overlap))}")
        ckw.update(kwargs)
        self._adapter = adapter = resolve(driver, sync=self._sync)
        adapter.validate(dsn, ckw)
        self._dsn = dsn
        self._connect_kwargs = ckw
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
        self._configure = _hook("configure", configure)
        self._check = _hook("check", check)
        self._reconnect_failed = _hook("reconnect_failed", reconnect_failed)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        self.name = name or f"pool-{next(_names)}"
        self._target = describe_target(dsn, ckw)
        self._lease_class = adapter.lease_class
        self._new_lease = lease_maker(adapter.lease_class)
        # Bound once: the hot paths call these on every lease.
        self._is_closed = adapter.is_closed
        self._status = adapter.status
        self._quick_status = adapter.quick_status
        self._transactional = adapter.transactional_context
        self._core: PoolCore[Any] = PoolCore(self._config, self._wake, refuse=self._refuse)
        self._opened = False
        self._closed = False

    def _wake(self, waiter: Any, entry: Entry | None) -> bool:
        raise NotImplementedError

    def _refuse(self, waiter: Any, error: PoolConnectError) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """``True`` once ``close()`` or ``terminate()`` began."""
        return self._closed

    @property
    def min_size(self) -> int:
        return self._core.config.min_size

    @property
    def max_size(self) -> int:
        return self._core.config.max_size

    @property
    def timeout(self) -> float | None:
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
        return _seconds("timeout", timeout, allow_none=True)

    # ------------------------------------------------------------------
    # pieces of the shells' IO paths that are not IO themselves

    def _fill_problem(self, start: float, seconds: float | None, now: float) -> Exception | None:
        """While ``wait()``-ing to fill: the error to raise now, if any."""
        core = self._core
        if seconds is not None and now - start >= seconds:
            exc: Exception = PoolTimeout(
                f"{self.name}: {core.size - core.connecting} of {self.min_size} "
                f"connections open after {seconds:.3g}s{core.connect_trouble()}"
            )
        else:
            why = core.connect_refusal(now) if core.failing_since is not None else None
            if why is None:
                return None
            exc = PoolConnectError(f"{self.name}: {why}")
        exc.__cause__ = core.last_connect_error
        return exc

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
                logger.debug("%s: terminate failed", self.name, exc_info=True)

    def _log_connect_failed(
        self, exc: BaseException, delay: float | None, permanent: bool = False,
        again: bool = False,
    ) -> None:
        # ``again``: rejected before too.  A rejection is retried every
        # backoff_max for as long as it lasts; one warning says it, the
        # repeats go to debug (every caller gets the error anyway).
        logger.log(
            logging.DEBUG if again and permanent else logging.WARNING,
            "%s: connect failed (%s)%s%s",
            self.name,
            redact(f"{type(exc).__name__}: {exc}"),
            "; the server rejected it, so callers fail at once" if permanent else "",
            "" if delay is None else f"; retrying in {delay * 1000:.0f} ms",
        )

    def _connect_timed_out(self) -> TimeoutError:
        """The error of a connect (and ``configure``) that overran ``connect_timeout``."""
        return TimeoutError(
            f"connect (and configure) timed out after {self._connect_timeout:g}s"
        )

    def _log_reset_failed(self, entry: Entry, exc: BaseException) -> None:
        logger.warning(
            "%s: reset of connection #%d failed (%s); discarding it",
            self.name,
            entry.id,
            redact(repr(exc)),
        )

    def _log_check_failed(self, entry: Entry) -> None:
        logger.info("%s: connection #%d failed its check; replacing it", self.name, entry.id)

    @staticmethod
    def _tick_weakly(ref: Callable[[], Any]) -> bool:
        """One housekeeping tick on a weakly held pool; ``False`` once it is gone."""
        pool = ref()
        if pool is None or pool._closed:
            return False
        try:
            pool._housekeeping_tick()
        except Exception:  # pragma: no cover - a bug; keep the pool alive
            logger.exception("%s: housekeeping failed", pool.name)
        return True

    @staticmethod
    def _check_close_timeout(timeout: Any) -> float | None:
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"timeout must be a number >= 0 or None, not {timeout!r}")
        return float(timeout)

    def _check_resize(self, min_size: Any, max_size: Any) -> tuple[int, int]:
        if max_size is None:
            max_size = max(min_size, self._core.config.max_size) if isinstance(
                min_size, int
            ) else min_size
        PoolConfig(min_size=min_size, max_size=max_size)  # validates both
        return min_size, max_size


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

