"""Pool registries: one pool per database, and one cap on them all.

A multi-tenant program talks to many databases: one per tenant, shard or
region.  A registry hands out the pool for a DSN (and pool options),
creating it on first use; closes pools nobody has used for ``idle_ttl``;
and, with ``max_total``, caps the server connections of all its pools
together, so that a thousand tenants cannot exhaust the server's
``max_connections``::

    registry = PoolRegistry(max_total=40, idle_ttl=300, max_size=5)
    with registry.connection(tenant_dsn) as conn:
        conn.execute("select 1")

How the cap works
-----------------
Every pool of a registry with ``max_total`` draws its connections from one
:class:`~pgmarina._core.budget.Budget`: a permit is taken before a connect
starts and given back once the connection is closed, so connections being
opened and being closed count too, and the cap holds at every instant.  A
checkout that finds an idle connection never asks the budget: a registry
pool costs what a standalone one does until it has to open a connection.

When every permit is taken, a pool that needs a connection for a caller
first takes one back from another pool: the idle connection that has been
idle longest across the registry is closed, even if its pool drops below
``min_size`` (under a budget ``min_size`` is a wish, refilled only from free
permits).  With nothing idle, the caller waits, first come first served
across pools, up to its own ``timeout`` (a lease that comes back to a pool
whose callers queued after another pool's is closed, so that its permit
goes to the older caller).  While pools wait, the registry retries the
reclaim every 20 ms, so a connection that goes idle later is found soon.

Keys and secrets
----------------
A pool's key is a keyed hash (BLAKE2b, with a key drawn at random per
process) of the normalized DSN and the pool's options: the same database
spelt two ways (``host=a dbname=b`` and ``postgresql://a/b``) gets one pool,
and neither the DSN nor its password is ever kept in a key, a pool name, a
``repr``, a log line or the stats.

Idle pools
----------
A pool with no lease and no waiter, and not looked up, for ``idle_ttl``
seconds is closed and removed (checked a few times per ``idle_ttl``, at
most every second); the next lookup makes a new one.  So do not keep a pool
object from a registry for longer than that without using it: look it up
each time (a dict lookup and a hash), or use :meth:`PoolRegistry.connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from ._core import Budget, PoolStats
from ._core.config import seconds
from .errors import PoolClosed
from .shells._common import DEFAULT, PoolBase, logger
from .shells.aio import AsyncPool
from .shells.threaded import Pool

__all__ = ["AsyncPoolRegistry", "PoolRegistry", "RegistryStats", "dsn_key"]

_NO_MEMO: Any = object()

#: While pools wait for permits, reclaims are retried this often (seconds).
_RECLAIM_RETRY = 0.02

#: Drawn once per process: a key is useless outside the process that made it.
_HASH_KEY = os.urandom(32)


def dsn_key(dsn: str | None, options: Mapping[str, Any] | None = None) -> str:
    """The registry key of a DSN and pool options: a hash, never the secret.

    The DSN is normalized first (URL or ``key=value`` form, parameter order,
    ``host``'s case), so equal targets get equal keys.

    Raises:
        TypeError: ``dsn`` is not a str or None.
        ValueError: ``dsn`` cannot be parsed.
    """
    parts = sorted(_parse_dsn(dsn).items())
    opts = sorted((k, repr(v)) for k, v in (options or {}).items())
    digest = hashlib.blake2b(repr((parts, opts)).encode(), key=_HASH_KEY, digest_size=16)
    return digest.hexdigest()


def _parse_dsn(dsn: str | None) -> dict[str, str]:
    if dsn is None:
        return {}
    if not isinstance(dsn, str):
        raise TypeError(f"dsn must be a str or None, not {type(dsn).__name__}")
    text = dsn.strip()
    if text.startswith(("postgresql://", "postgres://")):
        return _parse_url(text)
    return _parse_keywords(text)


def _parse_url(text: str) -> dict[str, str]:
    url = urlsplit(text)
    out: dict[str, str] = {}
    netloc = url.netloc
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, password = auth.partition(":")
        if user:
            out["user"] = unquote(user)
        if password:
            out["password"] = unquote(password)
    hosts, ports = [], []
    for hp in netloc.split(",") if netloc else []:
        host, port = hp, ""
        if hp.startswith("["):
            host, _, rest = hp[1:].partition("]")
            port = rest.lstrip(":")
        elif ":" in hp:
            host, port = hp.rsplit(":", 1)
        hosts.append(unquote(host).lower())
        ports.append(port)
    if any(hosts):
        out["host"] = ",".join(hosts)
    if any(ports):
        out["port"] = ",".join(ports)
    dbname = unquote(url.path[1:]) if url.path.startswith("/") else ""
    if dbname:
        out["dbname"] = dbname
    for key, value in parse_qsl(url.query, keep_blank_values=True):
        out[key] = value
    return out


def _parse_keywords(text: str) -> dict[str, str]:
    """libpq's ``key=value`` form, with single quotes and backslash escapes."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise ValueError("dsn is neither a postgresql:// URL nor key=value pairs")
        key = text[i:eq].strip()
        i = eq + 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while i < n and text[i] != "'":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            if i >= n:
                raise ValueError("dsn has an unterminated quoted value")
            i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
        out[key] = "".join(value)
    if "host" in out:
        out["host"] = out["host"].lower()
    return out


@dataclass(frozen=True, slots=True)
class RegistryStats:
    """A snapshot of a registry.

    Attributes:
        pools: Each pool's :class:`PoolStats`, by key.
        size: Connections open or opening over all pools.
        idle: Idle connections, over all pools.
        in_use: Leased connections, over all pools.
        waiting: Callers queued, over all pools.
        max_total: The cap (``None``: none).
        budget_used: Permits held (connections opening, open or closing,
            and permits reserved for a pool about to connect); 0 without a cap.
        claims: Connections pools wait for because the cap is reached.
        reclaims: Idle connections closed to make room for another pool.
        pools_created: Pools made since the registry was made.
        pools_collected: Pools closed and removed for ``idle_ttl`` since then.
    """

    pools: Mapping[str, PoolStats]
    size: int
    idle: int
    in_use: int
    waiting: int
    max_total: int | None
    budget_used: int
    claims: int
    reclaims: int
    pools_created: int
    pools_collected: int


P = TypeVar("P", bound=PoolBase)


@dataclass(eq=False)
class _Slot(Generic[P]):
    pool: P
    last_used: float  # looked up, or seen with leases or waiters
    acquires: int = 0  # the pool's counter when last seen
    aliases: set[Any] = field(default_factory=set)  # its keys in the memo


class _RegistryBase(Generic[P]):
    """What both registries share: keys, the budget, stats, the sweep."""

    _pool_class: ClassVar[type[PoolBase]]
    _default: ClassVar[Any] = None

    @classmethod
    def _the_default(cls, name: str) -> Any:
        """This class's process-wide registry, made (again, if it was closed)
        under ``name``; each subclass's ``default()`` gives it its type."""
        with _default_lock:
            if cls._default is None or cls._default.closed:
                cls._default = cls(name=name)
            return cls._default

    def __init__(
        self,
        *,
        max_total: int | None = None,
        idle_ttl: float | None = 300.0,
        name: str = "registry",
        **pool_defaults: Any,
    ) -> None:
        """See the subclass docstring."""
        if max_total is not None:
            self._budget: Budget | None = Budget(max_total, lock=threading.Lock())
        else:
            self._budget = None
        self._idle_ttl = seconds("idle_ttl", idle_ttl, nullable=True, positive=True)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self.name = name
        self._defaults = pool_defaults
        self._lock = threading.Lock()  # guards the fields below
        self._slots: dict[str, _Slot[P]] = {}
        # (dsn, options) as given -> slot (see _lookup).  It holds the DSN as
        # the pool itself does (to connect), and goes with the pool.
        self._memo: dict[Any, _Slot[P]] = {}
        self._closed = False
        self._created = 0
        self._collected = 0

    # ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: lookups then raise ``PoolClosed``."""
        return self._closed

    @property
    def max_total(self) -> int | None:
        """The cap on all pools' connections together (``None``: none)."""
        return None if self._budget is None else self._budget.max_total

    @property
    def idle_ttl(self) -> float | None:
        """Seconds unused after which a pool is closed (``None``: never)."""
        return self._idle_ttl

    def keys(self) -> list[str]:
        """The keys of the pools open now."""
        with self._lock:
            return list(self._slots)

    def __len__(self) -> int:
        """How many pools are open now."""
        return len(self._slots)

    def _lookup(self, dsn: str | None, options: dict[str, Any]) -> P:
        """The pool for ``dsn`` and ``options``, made (not opened) if new.

        Caller holds ``self._lock``; a new pool is counted in ``_created``
        for the subclass to open under the same lock.
        """
        # The memo maps the arguments as given to their slot: a lookup by
        # the same arguments again is a dict get, with no parsing or hashing.
        try:
            memo: Any = (dsn, *sorted(options.items())) if options else dsn
            slot = self._memo.get(memo)
        except TypeError:  # an unhashable option value: no memo
            memo, slot = _NO_MEMO, None
        if slot is not None and not slot.pool._closed:
            slot.last_used = monotonic()
            return slot.pool
        if self._closed:
            raise PoolClosed(f"{self.name} is closed")
        key = dsn_key(dsn, options)
        slot = self._slots.get(key)
        if slot is not None and slot.pool._closed:
            # Closed by its user: a lookup makes a new one, as after idle_ttl.
            self._forget(key)
            slot = None
        if slot is None:
            settings = {**self._defaults, **options}
            settings.setdefault("name", f"{self.name}/{key[:12]}")
            pool: P = self._pool_class(dsn, **settings)  # type: ignore[assignment]
            if self._budget is not None:
                pool._join_budget(self._budget)
            slot = self._slots[key] = _Slot(pool, monotonic())
            self._created += 1
        slot.last_used = monotonic()
        if memo is not _NO_MEMO and len(slot.aliases) < 8:
            self._memo[memo] = slot
            slot.aliases.add(memo)
        return slot.pool

    def _forget(self, key: str) -> P:
        """Take a pool out (caller holds the lock); the caller closes it."""
        slot = self._slots.pop(key)
        for memo in slot.aliases:
            self._memo.pop(memo, None)
        return slot.pool

    def _due(self, now: float) -> list[P]:
        """Pools idle for ``idle_ttl``, taken out of the registry (lock held)."""
        ttl = self._idle_ttl
        if ttl is None:
            return []
        gone = []
        for key, slot in list(self._slots.items()):
            s = slot.pool.stats()
            if s.in_use or s.waiting or s.acquires != slot.acquires:
                slot.acquires = s.acquires
                slot.last_used = now
            elif now - slot.last_used >= ttl:
                gone.append(self._forget(key))
                self._collected += 1
        return gone

    def _sweep_period(self) -> float:
        ttl = self._idle_ttl
        return 1.0 if ttl is None else min(1.0, max(ttl / 4, 0.01))

    def _tick(self) -> float:
        """How long the background loop sleeps before its next step.

        The sweep runs a few times per ``idle_ttl`` (at most every second);
        while pools wait for permits, reclaims are retried every 20 ms.
        """
        period = self._sweep_period()
        budget = self._budget
        if budget is not None and budget.waiting:
            return min(period, _RECLAIM_RETRY)
        return period

    def _reclaim_step(self) -> None:
        if self._budget is not None and self._budget.waiting:
            self._budget.retry_reclaims()

    def stats(self) -> RegistryStats:
        """Per-pool and total figures; see :class:`RegistryStats`."""
        with self._lock:
            pools = {key: slot.pool.stats() for key, slot in self._slots.items()}
            created, collected = self._created, self._collected
        b = self._budget.stats() if self._budget is not None else None
        return RegistryStats(
            pools=pools,
            size=sum(s.size for s in pools.values()),
            idle=sum(s.idle for s in pools.values()),
            in_use=sum(s.in_use for s in pools.values()),
            waiting=sum(s.waiting for s in pools.values()),
            max_total=None if b is None else b.max_total,
            budget_used=0 if b is None else b.used,
            claims=0 if b is None else b.claims,
            reclaims=0 if b is None else b.reclaims,
            pools_created=created,
            pools_collected=collected,
        )

    def __repr__(self) -> str:
        s = self.stats()
        cap = "" if s.max_total is None else f", budget {s.budget_used}/{s.max_total}"
        state = "closed" if self._closed else "open"
        return (
            f"<{type(self).__name__} {self.name!r} {state} | {len(s.pools)} pools, "
            f"{s.size} connections: {s.idle} idle, {s.in_use} in use, "
            f"{s.waiting} waiting{cap}>"
        )


class PoolRegistry(_RegistryBase[Pool]):
    """Thread :class:`~pgmarina.Pool` objects by DSN, under one connection cap.

    Keyword Args:
        max_total (int | None): The most server connections all pools
            together hold at any instant, counting ones being opened and
            closed (default ``None``: no cap beyond each pool's ``max_size``).
        idle_ttl (float | None): Seconds after which a pool with no lease,
            no waiter and no lookup is closed and removed (default ``300``;
            ``None``: never).
        name (str): How logs and errors name the registry (default
            ``"registry"``; its pools are named ``name/<key prefix>``).
        **pool_defaults (Any): Settings for every pool (``max_size=5``,
            ``driver="psycopg2"``…); a lookup's own options override them.

    Raises:
        TypeError, ValueError: a bad ``max_total`` or ``idle_ttl``.
    """

    _pool_class = Pool

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stopping = threading.Event()
        self._wake = threading.Event()  # a claim starved, or the registry closes
        self._sweeper: threading.Thread | None = None
        if self._budget is not None:
            self._budget.on_starved = self._wake.set

    def pool(self, dsn: str | None = None, **options: Any) -> Pool:
        """The open pool for ``dsn`` and ``options``, made on first use.

        Raises:
            PoolClosed: the registry is closed.
            TypeError, ValueError: bad options (as the pool constructor).
        """
        with self._lock:
            count = self._created
            pool = self._lookup(dsn, options)
            if self._created != count:
                try:
                    pool.open()
                except BaseException:
                    self._forget(next(k for k, s in self._slots.items() if s.pool is pool))
                    raise
                self._start_sweeper()
        return pool

    def connection(
        self, dsn: str | None = None, *, timeout: float | None = DEFAULT, **options: Any
    ) -> contextlib.AbstractContextManager[Any]:
        """``with registry.connection(dsn) as conn:``: a lease for the block.

        It is ``pool.connection()`` of the pool for ``dsn`` (commit on
        success, roll back on error), looked up now.
        """
        return self.pool(dsn, **options).connection(timeout=timeout)

    def _start_sweeper(self) -> None:
        if self._sweeper is None and (self._idle_ttl is not None or self._budget is not None):
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name=f"{self.name} sweeper", daemon=True
            )
            self._sweeper.start()

    def _sweep_loop(self) -> None:
        next_sweep = monotonic()
        while not self._stopping.is_set():
            self._wake.wait(self._tick())
            self._wake.clear()
            if self._stopping.is_set():
                return
            self._reclaim_step()
            if self._idle_ttl is not None and monotonic() >= next_sweep:
                self.sweep()
                next_sweep = monotonic() + self._sweep_period()

    def sweep(self) -> int:
        """Close the pools idle for ``idle_ttl`` now; returns how many.

        The registry calls it periodically; tests and schedulers may too.
        """
        with self._lock:
            gone = self._due(monotonic())
        for pool in gone:
            _close_quietly(pool)
        return len(gone)

    def close(self, timeout: float | None = 10.0) -> None:
        """Close every pool (each waits up to ``timeout`` for its leases)."""
        with self._lock:
            self._closed = True
            pools = [self._forget(k) for k in list(self._slots)]
        self._stopping.set()
        self._wake.set()
        for pool in pools:
            pool.close(timeout)
        if self._sweeper is not None and self._sweeper is not threading.current_thread():
            self._sweeper.join(2.0)

    def __enter__(self) -> PoolRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def default(cls) -> PoolRegistry:
        """The process-wide registry (no cap, ``idle_ttl=300``), made on first use."""
        return cls._the_default("default registry")  # type: ignore[no-any-return]


class AsyncPoolRegistry(_RegistryBase[AsyncPool]):
    """:class:`~pgmarina.AsyncPool` objects by DSN, under one connection cap.

    The arguments are :class:`PoolRegistry`'s.  A registry serves the event
    loop it is first used on, as its pools do.
    """

    _pool_class = AsyncPool

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sweeper: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None  # a claim starved

    async def pool(self, dsn: str | None = None, **options: Any) -> AsyncPool:
        """The open pool for ``dsn`` and ``options``, made on first use.

        Raises:
            PoolClosed: the registry is closed.
            TypeError, ValueError: bad options (as the pool constructor).
        """
        return self._pool_now(dsn, options)

    def _pool_now(self, dsn: str | None, options: dict[str, Any]) -> AsyncPool:
        with self._lock:
            count = self._created
            pool = self._lookup(dsn, options)
            if self._created != count:
                try:
                    pool._start()  # opens without an await: no one sees it half open
                except BaseException:
                    self._forget(next(k for k, s in self._slots.items() if s.pool is pool))
                    raise
                if self._sweeper is None and (
                    self._idle_ttl is not None or self._budget is not None
                ):
                    loop = asyncio.get_running_loop()
                    self._wake = wake = asyncio.Event()
                    if self._budget is not None:
                        self._budget.on_starved = lambda: loop.call_soon_threadsafe(wake.set)
                    self._sweeper = loop.create_task(
                        self._sweep_loop(), name=f"{self.name} sweeper"
                    )
        return pool

    def connection(
        self, dsn: str | None = None, *, timeout: float | None = DEFAULT, **options: Any
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        """``async with registry.connection(dsn) as conn:``: a lease for the block.

        It is ``pool.connection()`` of the pool for ``dsn``, looked up now:
        call it inside a coroutine (a new pool starts on the running loop).
        """
        return self._pool_now(dsn, options).connection(timeout=timeout)

    async def _sweep_loop(self) -> None:
        next_sweep = monotonic()
        wake = self._wake
        assert wake is not None
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), self._tick())
            wake.clear()
            self._reclaim_step()
            if self._idle_ttl is not None and monotonic() >= next_sweep:
                await self.sweep()
                next_sweep = monotonic() + self._sweep_period()

    async def sweep(self) -> int:
        """Close the pools idle for ``idle_ttl`` now; returns how many."""
        with self._lock:
            gone = self._due(monotonic())
        for pool in gone:
            try:
                await pool.close()
            except Exception:  # pragma: no cover - close does not raise
                logger.exception("%s: closing idle pool %s failed", self.name, pool.name)
        return len(gone)

    async def close(self, timeout: float | None = 10.0) -> None:
        """Close every pool (each waits up to ``timeout`` for its leases)."""
        with self._lock:
            self._closed = True
            pools = [self._forget(k) for k in list(self._slots)]
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and sweeper is not asyncio.current_task():
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await asyncio.gather(*(pool.close(timeout) for pool in pools))

    async def __aenter__(self) -> AsyncPoolRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @classmethod
    def default(cls) -> AsyncPoolRegistry:
        """The process-wide registry (no cap, ``idle_ttl=300``), made on first use."""
        return cls._the_default("default async registry")  # type: ignore[no-any-return]


_default_lock = threading.Lock()


def _close_quietly(pool: Pool) -> None:
    try:
        pool.close()
    except Exception:  # pragma: no cover - close does not raise
        logger.exception("closing idle pool %s failed", pool.name)
