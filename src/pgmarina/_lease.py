"""The lease: what a borrower holds instead of the bare driver connection.

A lease forwards every attribute to the driver connection, so the whole
driver API works on it (``await conn.fetch(...)``, ``conn.cursor()``…), and
``isinstance(conn, asyncpg.Connection)`` (or ``psycopg.Connection``) holds.
When the lease ends the pool swaps the connection for :data:`RELEASED`,
whose every attribute raises :class:`~pgmarina.errors.ConnectionReleasedError`.
That costs nothing per call: there is no "am I released?" branch, just one
attribute lookup that fails loudly once the connection is gone.

Drivers whose borrowers can leave state on a connection that a local check
cannot see (asyncpg's listeners, psycopg's ``autocommit``, say) subclass
:class:`Lease` to note such calls in ``_undo``; the pool reverts them on
release, after its rollback.  A noted change costs that one lease a slower
release; a lease that noted nothing goes back on the fast path.

What a borrower *makes* from a lease (cursors, prepared statements,
transaction objects) would otherwise outlive it and run on the next
borrower's session.  Driver leases record such objects in ``_made``, and
:func:`end` hands that to the lease class's ``_void``, which makes them
refuse further use.  That costs a lease which made nothing one ``None`` check.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar
from weakref import ref

from .errors import ConnectionReleasedError

__all__ = [
    "FULL_RESET",
    "RELEASED",
    "Lease",
    "close_tracked",
    "end",
    "forward",
    "info",
    "maker",
    "reset_on_release",
    "set_made",
    "stand_in",
    "track",
    "unwrap",
]

L = TypeVar("L", bound="Lease")


def _released_error(name: str, setting: bool) -> BaseException:
    verb = "set" if setting else "use"
    return ConnectionReleasedError(
        f"cannot {verb} .{name}: this connection was released back to the pool"
    )


class _Released:
    """Stands in for the connection once a lease is over.

    ``error(name, setting)`` makes what every attribute read (``setting``
    false) or write raises; the pool's own stand-in raises
    :class:`~pgmarina.errors.ConnectionReleasedError`.
    """

    __slots__ = ("_error",)

    def __init__(self, error: Callable[[str, bool], BaseException] = _released_error) -> None:
        object.__setattr__(self, "_error", error)

    def __getattr__(self, name: str) -> Any:
        raise self._error(name, False)

    def __setattr__(self, name: str, value: Any) -> None:
        raise self._error(name, True)

    def __repr__(self) -> str:
        return "<released>"


RELEASED: Any = _Released()


class ClosedStandIn(_Released):
    """A stand-in whose reads reach ``dead``, a connection closed for good.

    For a façade whose peer leaves a handed-out object on its closed
    connection (asyncpg, when a pool's ``setup`` fails): ``is_closed()``
    answers, a query fails as on any closed connection, writes raise
    ``error``, and the pool counts the lease as released.
    """

    __slots__ = ("_dead",)

    def __init__(self, dead: Any, error: Callable[[str, bool], BaseException]) -> None:
        super().__init__(error)
        object.__setattr__(self, "_dead", dead)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dead, name)

    def __repr__(self) -> str:
        return "<closed>"


def stand_in(error: Callable[[str, bool], BaseException]) -> Any:
    """A released-connection stand-in whose attributes raise ``error(name, setting)``.

    For façades whose peers raise their own error on a released connection:
    the façade ends a lease as usual, then puts its stand-in in the lease's
    place (``set_con(lease, stand_in)``).  :attr:`Lease.released`,
    :func:`unwrap` and :func:`reset_on_release` know any stand-in; the
    pool's release path knows only :data:`RELEASED`, so the façade must
    refuse a second release itself.
    """
    return _Released(error)


class _Fields:
    """A lease's own state, in a class with plain attribute stores.

    The function :func:`maker` returns fills these in while the object is
    still a ``_Fields`` and only then gives it its lease class, so that making
    a lease does not go through :meth:`Lease.__setattr__` four times (that
    tripled its cost).  That needs the lease class to add no slots,
    ``__dict__`` or ``__weakref__``; other subclasses are built the usual way.
    """

    __slots__ = ("_con", "_entry", "_made", "_pool", "_undo")


class Lease(_Fields):
    """A borrowed connection.  Valid until released; useless (and loud) after."""

    __slots__ = ()

    def __init__(self, con: Any, entry: Any, pool: Any) -> None:
        set_con(self, con)
        _set_entry(self, entry)
        _set_pool(self, pool)
        _set_undo(self, None)
        set_made(self, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # ``conn.autocommit = True`` and the like reach the driver connection.
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._con, name, value)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._con)

    @property
    def released(self) -> bool:
        """``True`` once the lease went back to the pool."""
        return isinstance(self._con, _Released)

    def _note(self, item: Any) -> None:
        # Called by driver-specific leases when a borrower leaves state behind.
        if self._undo is None:
            _set_undo(self, [item])
        else:
            self._undo.append(item)

    @staticmethod
    def _void(con: Any, made: Any) -> None:
        """Make what ``_made`` records refuse further use (the lease just ended).

        Driver leases that set ``_made`` override this; it must do no IO.
        """

    def __repr__(self) -> str:
        con = self._con
        if con is RELEASED:
            return f"<pgmarina lease #{self._entry.id} (released)>"
        return f"<pgmarina lease #{self._entry.id} of {type(con).__module__}.{type(con).__name__}>"


_OWN = frozenset(_Fields.__slots__)
# The slots' own setters: faster than object.__setattr__.
_slot: Any = _Fields.__dict__
#: ``set_con(lease, RELEASED)`` ends a lease the caller knows is live, with no
#: Python frame: the async release path's common case (:func:`end` checks).
set_con = _slot["_con"].__set__
_set_entry = _slot["_entry"].__set__
_set_pool = _slot["_pool"].__set__
_set_undo = _slot["_undo"].__set__
#: ``set_made(lease, made)``: record what the lease's ``_void`` gets at its end.
set_made = _slot["_made"].__set__

#: Noted in ``_undo`` by :func:`reset_on_release`: this lease ends with a full reset.
FULL_RESET = ("full",)


_blank = object.__new__


def maker(cls: type[L]) -> Callable[[Any, Any, Any], L]:
    """``make(con, entry, pool)``: a new lease of class ``cls``, made fast.

    Raises:
        TypeError: ``cls`` is not a :class:`Lease` subclass.
    """
    if not (isinstance(cls, type) and issubclass(cls, Lease)):
        raise TypeError(f"lease_class must be a subclass of pgmarina.Lease, not {cls!r}")
    same_layout = (
        cls.__basicsize__ == _Fields.__basicsize__
        and not cls.__dictoffset__
        and not cls.__weakrefoffset__
    )
    if not same_layout:
        return cls  # adds a __dict__ or slots: plain construction

    def make(con: Any, entry: Any, pool: Any) -> L:
        lease: Any = _blank(_Fields)
        lease._con = con
        lease._entry = entry
        lease._pool = pool
        lease._undo = None
        lease._made = None
        lease.__class__ = cls
        return lease  # type: ignore[no-any-return]  # (cast() would be a call per lease)

    return make


def forward(cls: type[Lease], *names: str) -> None:
    """Give ``cls`` a fast path to the driver methods called most often.

    ``__getattr__`` runs only after Python's normal lookup has failed, which
    costs about 0.4 µs per access; a property on the class whose getter is a
    C-level ``attrgetter`` costs under 0.1 µs.  Only *methods* belong here:
    these properties cannot be assigned, and attributes a borrower sets
    (``autocommit``, say) must keep going through ``__setattr__``.  After
    release the getter meets :data:`RELEASED` and raises as usual.
    """
    for name in names:
        if name in cls.__dict__:
            raise ValueError(f"{cls.__name__}.{name} is already defined")
        setattr(cls, name, property(attrgetter(f"_con.{name}")))


def end(lease: Lease) -> Any:
    """End ``lease`` and return its driver connection.

    Every later use of the lease raises ``ConnectionReleasedError``.

    Raises:
        ConnectionReleasedError: the lease was already ended.
    """
    con = lease._con
    if con is RELEASED:
        raise ConnectionReleasedError("this connection was already released")
    set_con(lease, RELEASED)
    made = lease._made
    if made is not None:
        lease._void(con, made)
    return con


def reset_on_release(conn: Any, mode: str) -> None:
    """Have this one lease end with a full session reset.

    ``reset="auto"`` (the default) rolls back and reverts what the driver
    tracks locally, but leaves session state (``SET``, advisory locks,
    ``LISTEN``, temporary tables…) to the next borrower.  A borrower that
    knows it dirtied the session calls ``reset_on_release(conn, "full")``
    inside its block: when the lease ends the pool runs the driver's full
    reset, as ``reset="full"`` does for every lease.  Other leases keep
    the cheap release.  Calling it twice is the same as once.

    Args:
        conn: A live lease from :class:`~pgmarina.AsyncPool` or
            :class:`~pgmarina.Pool`.
        mode: ``"full"``, the one reset a lease can ask for beyond the
            pool's own (named so that a call reads as what it does).

    Raises:
        TypeError: ``conn`` is not a lease.
        ValueError: ``mode`` is not ``"full"``.
        ConnectionReleasedError: the lease is over.
    """
    if not isinstance(conn, Lease):
        raise TypeError(
            f"reset_on_release() takes a connection leased from a pool, not {type(conn).__name__}"
        )
    if mode != "full":
        raise ValueError(f"mode must be 'full', not {mode!r}")
    if isinstance(conn._con, _Released):
        raise ConnectionReleasedError("this connection was released back to the pool")
    undo = conn._undo
    if undo is None or FULL_RESET not in undo:
        conn._note(FULL_RESET)


def track(lease: Lease, cursor: Any) -> Any:
    """Record ``cursor`` as made from ``lease``, for its ``_void``; returns ``cursor``.

    ``_made`` becomes a set of weak references that remove themselves when
    their cursor is collected: a lease that runs a million queries holds no
    more references than it holds live cursors, and keeps no cursor (nor its
    results) alive.  (A plain set: a subclass's methods cost more to look up.)
    """
    made = lease._made
    if made is None:
        made = set()
        set_made(lease, made)
    made.add(ref(cursor, made.discard))
    return cursor


def close_tracked(made: set[Any], shut: Callable[[Any], Any]) -> None:
    """``shut(cursor)`` for every live cursor :func:`track` recorded in ``made``."""
    refs = list(made)
    # Emptied first: that also breaks the cycle set -> reference -> set.discard.
    made.clear()
    for cursor_ref in refs:
        cursor = cursor_ref()
        if cursor is not None:
            shut(cursor)


def info(conn: Any) -> dict[Any, Any]:
    """A dict that stays with the physical connection behind a live lease.

    What an integration knows about one connection (SQLAlchemy's record of
    it, say) lives here rather than on the driver connection: pgmarina
    never writes attributes onto a driver connection, and asyncpg's take
    none.  The dict is made on first use, so leases that never ask cost
    nothing; it goes away when the pool closes the connection.

    Raises:
        TypeError: ``conn`` is not a lease.
        ConnectionReleasedError: the lease is over.
    """
    if not isinstance(conn, Lease):
        raise TypeError(
            f"info() takes a connection leased from a pool, not {type(conn).__name__}"
        )
    if isinstance(conn._con, _Released):
        raise ConnectionReleasedError("this connection was released back to the pool")
    entry = conn._entry
    found: dict[Any, Any] | None = entry.info
    if found is None:
        found = entry.info = {}
    return found


def unwrap(conn: Any) -> Any:
    """The driver connection behind a lease (or ``conn`` itself if not a lease).

    Raises:
        ConnectionReleasedError: the lease is over.
    """
    if not isinstance(conn, Lease):
        return conn
    con = conn._con
    if isinstance(con, _Released):
        raise ConnectionReleasedError("this connection was released back to the pool")
    return con
