"""The lease: what a borrower holds instead of the bare driver connection.

A lease forwards every attribute to the driver connection, so the whole
driver API works on it (``await conn.fetch(...)``, ``conn.cursor()``…), and
``isinstance(conn, asyncpg.Connection)`` (or ``psycopg.Connection``) holds.
When the lease ends the pool swaps the connection for :data:`RELEASED`,
whose every attribute raises :class:`~pgmarina.errors.ConnectionReleasedError`.
That costs nothing per call: there is no "am I released?" branch, just one
attribute lookup that fails loudly once the connection is gone.

Drivers whose borrowers can leave state on a connection that a local check
cannot see (asyncpg's listeners, say) subclass :class:`Lease` to note such
calls in ``_undo``; the pool reverts them on release.
"""

from __future__ import annotations

from typing import Any

from .errors import ConnectionReleasedError

__all__ = ["RELEASED", "Lease", "unwrap"]


class _Released:
    """Stands in for the connection once a lease is over."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise ConnectionReleasedError(
            f"cannot use .{name}: this connection was released back to the pool"
        )

    def __repr__(self) -> str:
        return "<released>"


RELEASED: Any = _Released()


class Lease:
    """A borrowed connection.  Valid until released; useless (and loud) after."""

    __slots__ = ("_con", "_entry", "_pool", "_undo")

    def __init__(self, con: Any, entry: Any, pool: Any) -> None:
        self._con = con
        self._entry = entry
        self._pool = pool
        self._undo: list[Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._con)

    @property
    def released(self) -> bool:
        """``True`` once the lease went back to the pool."""
        return self._con is RELEASED

    def _note(self, item: Any) -> None:
        if self._undo is None:
            self._undo = [item]
        else:
            self._undo.append(item)

    def __repr__(self) -> str:
        con = self._con
        if con is RELEASED:
            return f"<pgmarina lease #{self._entry.id} (released)>"
        return f"<pgmarina lease #{self._entry.id} of {type(con).__module__}.{type(con).__name__}>"


def unwrap(conn: Any) -> Any:
    """The driver connection behind a lease (or ``conn`` itself if not a lease).

    Raises:
        ConnectionReleasedError: the lease is over.
    """
    if not isinstance(conn, Lease):
        return conn
    con = conn._con
    if con is RELEASED:
        raise ConnectionReleasedError("this connection was released back to the pool")
    return con
