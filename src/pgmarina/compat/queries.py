"""queries 2.1's ``queries.pool`` API, for programs written against it.

queries' pools are unlike pgmarina's: the caller opens psycopg2 connections
itself and adds them (``add()``) to a pool named by an id, ``get()`` never
waits (it raises when nothing is idle), and a connection is "locked" by the
session using it, held by weak reference, so that a session that is dropped
without freeing its connection frees it all the same.

This module keeps that small bookkeeping, and takes from pgmarina what fits:

* **Pool ids.** queries names a pool by a hash of its URI so that the URI is
  not kept in memory; :func:`pool_id` gives one, the registry's key
  (:func:`pgmarina.registry.dsn_key`), which never holds the password.
* **Idle pools.** A pool whose connections no session has used for its
  ``idle_ttl`` is closed and removed by :meth:`PoolManager.clean`, as the
  registry does with its pools.
* **A cap.** :meth:`PoolManager.set_max_total` (not in queries) caps the
  connections of all pools together with the registry's
  :class:`~pgmarina._core.budget.Budget`: an ``add()`` past the cap raises
  :class:`PoolFullError`, since here the caller, not the pool, connects.

Every error is a :class:`pgmarina.PoolError` and says which pool and what.
Thread safety: :class:`PoolManager`'s class methods run under one lock; a
:class:`Pool` used on its own is for one thread at a time.
"""

from __future__ import annotations

import threading
import weakref
from time import monotonic
from typing import Any, ClassVar

from .._core import Budget
from ..errors import PoolError
from ..registry import dsn_key

__all__ = [
    "ActivePoolError",
    "Connection",
    "ConnectionBusyError",
    "ConnectionNotFoundError",
    "NoIdleConnectionsError",
    "Pool",
    "PoolFullError",
    "PoolManager",
    "pool_id",
]


def pool_id(uri: str) -> str:
    """A pool id for ``uri`` that does not hold the URI (nor its password)."""
    return dsn_key(uri)


# -- errors ---------------------------------------------------------------------------------


class ActivePoolError(PoolError):
    """A pool was removed while sessions still used its connections."""

    def __init__(self, pid: str) -> None:
        super().__init__(f"pool {pid} has connections in use and cannot be removed")
        self.pid = pid


class ConnectionBusyError(PoolError):
    """A connection is locked by a live session or is executing a query."""

    def __init__(self, cid: int) -> None:
        super().__init__(f"connection {cid} is busy (locked by a session or executing)")
        self.cid = cid


class ConnectionNotFoundError(PoolError):
    """The connection is not in the pool."""

    def __init__(self, pid: str, cid: int) -> None:
        super().__init__(f"connection {cid} is not in pool {pid}")
        self.pid, self.cid = pid, cid


class NoIdleConnectionsError(PoolError):
    """``get()`` found no idle connection (it never waits)."""

    def __init__(self, pid: str) -> None:
        super().__init__(f"pool {pid} has no idle connection")
        self.pid = pid


class PoolFullError(PoolError):
    """``add()`` past the pool's ``max_size`` (or the manager's ``max_total``)."""

    def __init__(self, pool: Pool, why: str = "") -> None:
        super().__init__(
            why or f"pool {pool.id} is full ({len(pool)} of max_size={pool.max_size})"
        )
        self.pool = pool


# -- connection -----------------------------------------------------------------------------


class Connection:
    """A psycopg2 connection in a pool, with the session that locks it.

    Args:
        handle: The ``psycopg2.extensions.connection``.
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.used_by: weakref.ref[Any] | None = None

    @property
    def id(self) -> int:
        """``id()`` of the psycopg2 connection."""
        return id(self.handle)

    @property
    def closed(self) -> bool:
        """The psycopg2 connection is closed."""
        return bool(self.handle.closed)

    @property
    def executing(self) -> bool:
        """A query is running on it (asynchronous psycopg2 connections)."""
        return bool(self.handle.isexecuting())

    @property
    def locked(self) -> bool:
        """A session that still exists holds it."""
        return self.used_by is not None and self.used_by() is not None

    @property
    def busy(self) -> bool:
        """Executing, or locked by a session that still exists."""
        if self.handle.isexecuting():
            return True
        return self.locked

    def lock(self, session: Any) -> None:
        """Lock it for ``session`` (held weakly: the lock dies with it).

        Raises:
            ConnectionBusyError: it is busy.
        """
        if self.busy:
            raise ConnectionBusyError(self.id)
        self.used_by = weakref.ref(session)

    def free(self) -> None:
        """Unlock it.

        Raises:
            ConnectionBusyError: it is executing a query.
        """
        if self.handle.isexecuting():
            raise ConnectionBusyError(self.id)
        self.used_by = None

    def close(self) -> None:
        """Close the psycopg2 connection.

        Raises:
            ConnectionBusyError: it is busy.
        """
        if self.busy:
            raise ConnectionBusyError(self.id)
        if not self.handle.closed:
            self.handle.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "busy" if self.busy else "idle"
        return f"<Connection {self.id} {state}>"


# -- pool -----------------------------------------------------------------------------------


class Pool:
    """Connections the caller added, handed to sessions without waiting.

    Args:
        pool_id: The pool's id (see :func:`pool_id`).
        idle_ttl: Seconds a pool may go without any session using its
            connections before :meth:`clean` closes them (and
            :meth:`PoolManager.clean` removes the pool).
        max_size: The most connections it may hold.
    """

    def __init__(self, pool_id: str, idle_ttl: float = 60, max_size: int = 1) -> None:
        self._id = pool_id
        self.connections: dict[int, Connection] = {}
        self.idle_ttl = _ttl(idle_ttl)
        self.max_size = _size(max_size)
        self._idle_since: float | None = monotonic()
        self._budget: Budget | None = None  # set by PoolManager.set_max_total

    @property
    def id(self) -> str:
        """The pool's id."""
        return self._id

    def __len__(self) -> int:
        return len(self.connections)

    def __contains__(self, connection: Any) -> bool:
        return id(connection) in self.connections

    @property
    def idle_connections(self) -> list[Any]:
        """The psycopg2 connections no session uses (closed ones left out)."""
        return [c.handle for c in self.connections.values() if not c.busy and not c.closed]

    @property
    def idle_duration(self) -> float:
        """Seconds since no session used any of its connections (0 while one does)."""
        if any(c.busy for c in self.connections.values()):
            self._idle_since = None
            return 0.0
        if self._idle_since is None:  # the last session went away without free()
            self._idle_since = monotonic()
        return monotonic() - self._idle_since

    @property
    def is_full(self) -> bool:
        """No room for another connection."""
        return len(self.connections) >= self.max_size

    def add(self, connection: Any) -> None:
        """Add a psycopg2 connection.

        Raises:
            ValueError: it is in the pool already.
            PoolFullError: the pool holds ``max_size`` connections (or the
                manager's ``max_total`` is reached).
        """
        if id(connection) in self.connections:
            raise ValueError(f"connection {id(connection)} is already in pool {self._id}")
        if self.is_full:
            raise PoolFullError(self)
        budget = self._budget
        if budget is not None and not budget.take(self, 0):  # type: ignore[arg-type]
            raise PoolFullError(
                self, f"all pools together hold max_total={budget.max_total} connections"
            )
        self.connections[id(connection)] = Connection(connection)

    def get(self, session: Any) -> Any:
        """An idle psycopg2 connection, locked for ``session``.

        Raises:
            NoIdleConnectionsError: none is idle (this never waits).
        """
        for conn in self.connections.values():
            if not conn.busy and not conn.closed:
                conn.lock(session)
                self._idle_since = None
                return conn.handle
        raise NoIdleConnectionsError(self._id)

    def lock(self, connection: Any, session: Any) -> None:
        """Lock ``connection`` for ``session``.

        Raises:
            ConnectionNotFoundError: it is not in the pool.
            ConnectionBusyError: it is busy.
        """
        self._find(connection).lock(session)
        self._idle_since = None

    def free(self, connection: Any) -> None:
        """Unlock ``connection``, from the session that used it.

        Raises:
            ConnectionNotFoundError: it is not in the pool.
            ConnectionBusyError: it is executing a query.
        """
        self._find(connection).free()
        if not any(c.busy for c in self.connections.values()):
            self._idle_since = monotonic()

    def remove(self, connection: Any) -> None:
        """Close ``connection`` and take it out of the pool.

        Raises:
            ConnectionNotFoundError: it is not in the pool.
            ConnectionBusyError: it is busy.
        """
        conn = self._find(connection)
        conn.close()
        self._drop(conn)

    def clean(self) -> None:
        """Drop closed connections; close them all once idle for ``idle_ttl``."""
        for conn in [c for c in self.connections.values() if c.closed]:
            self._drop(conn)
        if self.idle_duration > self.idle_ttl:
            self.close()

    def close(self) -> None:
        """Close and remove every connection no session uses.

        Raises:
            ConnectionBusyError: some are busy; they stay, the rest are closed.
        """
        busy = None
        for conn in list(self.connections.values()):
            try:
                conn.close()
            except ConnectionBusyError as exc:
                busy = exc
                continue
            self._drop(conn)
        if busy is not None:
            raise busy

    def shutdown(self) -> None:
        """Close every connection that is not executing, locked or not.

        Raises:
            ConnectionBusyError: some are executing; they stay.
        """
        busy = None
        for conn in list(self.connections.values()):
            if conn.executing:
                busy = ConnectionBusyError(conn.id)
                continue
            conn.free()
            conn.close()
            self._drop(conn)
        if busy is not None:
            raise busy

    def set_idle_ttl(self, ttl: float) -> None:
        """Set ``idle_ttl`` (seconds)."""
        self.idle_ttl = _ttl(ttl)

    def set_max_size(self, size: int) -> None:
        """Set ``max_size``; connections beyond it stay until removed."""
        self.max_size = _size(size)

    def _find(self, connection: Any) -> Connection:
        try:
            return self.connections[id(connection)]
        except KeyError:
            raise ConnectionNotFoundError(self._id, id(connection)) from None

    def _drop(self, conn: Connection) -> None:
        del self.connections[conn.id]
        if self._budget is not None:
            self._budget.release(self)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        idle = len(self.idle_connections)
        return (
            f"<Pool {self._id} | {len(self)}/{self.max_size} connections: {idle} idle, "
            f"{len(self) - idle} busy or closed>"
        )


def _ttl(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"idle_ttl must be a number of seconds, not {type(value).__name__}")
    if not value >= 0:
        raise ValueError(f"idle_ttl must be >= 0 seconds, got {value!r}")
    return float(value)


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_size must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"max_size must be >= 1, got {value!r}")
    return value


# -- manager --------------------------------------------------------------------------------


class PoolManager:
    """The process-wide set of pools, by id; every method is a class method.

    An unknown pool id raises ``KeyError``, as in queries.
    """

    _instance: ClassVar[PoolManager | None] = None
    _lock: ClassVar[threading.RLock] = threading.RLock()
    _pools: ClassVar[dict[str, Pool]] = {}
    _budget: ClassVar[Budget | None] = None

    @classmethod
    def instance(cls) -> PoolManager:
        """The one instance (the class methods work without it)."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @classmethod
    def create(cls, pid: str, idle_ttl: float = 60, max_size: int = 1) -> None:
        """Create pool ``pid``.

        Raises:
            KeyError: it exists already.
        """
        with cls._lock:
            if pid in cls._pools:
                raise KeyError(f"pool {pid} already exists")
            pool = Pool(pid, idle_ttl, max_size)
            pool._budget = cls._budget
            cls._pools[pid] = pool

    @classmethod
    def add(cls, pid: str, connection: Any) -> None:
        """Add a psycopg2 connection to pool ``pid`` (see :meth:`Pool.add`)."""
        with cls._lock:
            cls._get(pid).add(connection)

    @classmethod
    def get(cls, pid: str, session: Any) -> Any:
        """An idle connection of ``pid`` locked for ``session`` (see :meth:`Pool.get`)."""
        with cls._lock:
            return cls._get(pid).get(session)

    @classmethod
    def free(cls, pid: str, connection: Any) -> None:
        """Unlock ``connection`` (see :meth:`Pool.free`)."""
        with cls._lock:
            cls._get(pid).free(connection)

    @classmethod
    def lock(cls, pid: str, connection: Any, session: Any) -> None:
        """Lock ``connection`` for ``session`` (see :meth:`Pool.lock`)."""
        with cls._lock:
            cls._get(pid).lock(connection, session)

    @classmethod
    def clean(cls, pid: str) -> None:
        """Drop pool ``pid``'s closed connections; remove the pool once it has
        been idle for its ``idle_ttl`` (its connections closed)."""
        with cls._lock:
            pool = cls._get(pid)
            pool.clean()
            if not pool.connections and pool.idle_duration > pool.idle_ttl:
                del cls._pools[pid]

    @classmethod
    def has_connection(cls, pid: str, connection: Any) -> bool:
        """Whether pool ``pid`` holds the psycopg2 ``connection``."""
        with cls._lock:
            return connection in cls._get(pid)

    @classmethod
    def has_idle_connection(cls, pid: str) -> bool:
        """Whether pool ``pid`` has a connection no session uses."""
        with cls._lock:
            return bool(cls._get(pid).idle_connections)

    @classmethod
    def is_full(cls, pid: str) -> bool:
        """Whether pool ``pid`` holds ``max_size`` connections."""
        with cls._lock:
            return cls._get(pid).is_full

    @classmethod
    def size(cls, pid: str) -> int:
        """How many connections pool ``pid`` holds."""
        with cls._lock:
            return len(cls._get(pid))

    @classmethod
    def remove(cls, pid: str) -> None:
        """Close pool ``pid``'s connections and remove it.

        Raises:
            ActivePoolError: a session still uses one of its connections.
        """
        with cls._lock:
            pool = cls._get(pid)
            if any(c.busy for c in pool.connections.values()):
                raise ActivePoolError(pid)
            pool.close()
            del cls._pools[pid]

    @classmethod
    def remove_connection(cls, pid: str, connection: Any) -> None:
        """Close ``connection`` and take it out of pool ``pid`` (see :meth:`Pool.remove`)."""
        with cls._lock:
            cls._get(pid).remove(connection)

    @classmethod
    def set_idle_ttl(cls, pid: str, ttl: float) -> None:
        """Set pool ``pid``'s ``idle_ttl`` (seconds; see :meth:`Pool.set_idle_ttl`)."""
        with cls._lock:
            cls._get(pid).set_idle_ttl(ttl)

    @classmethod
    def set_max_size(cls, pid: str, size: int) -> None:
        """Set pool ``pid``'s ``max_size`` (see :meth:`Pool.set_max_size`)."""
        with cls._lock:
            cls._get(pid).set_max_size(size)

    @classmethod
    def set_max_total(cls, max_total: int | None) -> None:
        """Cap the connections of all pools together (pgmarina's addition).

        Pools created from now on count against the cap; ``None`` lifts it
        for them.  Connections already in pools are not counted.

        Raises:
            TypeError, ValueError: ``max_total`` is not an int >= 1 or None.
        """
        with cls._lock:
            cls._budget = None if max_total is None else Budget(max_total)

    @classmethod
    def shutdown(cls) -> None:
        """Close every connection of every pool and remove the pools.

        Raises:
            ConnectionBusyError: some connections are executing; their pools stay.
        """
        with cls._lock:
            busy = None
            for pid, pool in list(cls._pools.items()):
                try:
                    pool.shutdown()
                except ConnectionBusyError as exc:
                    busy = exc
                    continue
                del cls._pools[pid]
            if busy is not None:
                raise busy

    @classmethod
    def _get(cls, pid: str) -> Pool:
        try:
            return cls._pools[pid]
        except KeyError:
            raise KeyError(f"pool {pid} does not exist") from None
