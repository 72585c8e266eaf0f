"""psycopg2 adapter, for ``Pool(driver="psycopg2")``.

psycopg2's own pools have no timeouts, health checks or lifetimes; this
adapter gives psycopg2 code all of pgmarina's.  The transaction status is
read locally with ``get_transaction_status()``; ``pool.connection()`` commits
on success and rolls back on error (unless autocommit), like psycopg 3's.
Keywords ``connection_factory`` and ``cursor_factory`` go to
``psycopg2.connect``; the others are libpq parameters, checked up front.

As with psycopg 3, the connection attributes a borrower changes
(``autocommit``, ``isolation_level``, ``readonly``, ``deferrable`` by
assignment, ``set_session`` or ``set_isolation_level``; ``cursor_factory``)
are put back on release, and the cursors made from a lease are closed when it ends.
psycopg2 itself refuses a named cursor once its transaction is over; a
``withhold`` one lives on in the session, so the release closes it.

psycopg2 sends every query with its parameters interpolated, as one simple
query, and never prepares a statement, so it needs no change behind
PgBouncer in transaction pooling mode; with ``pgbouncer=True`` a full reset
only rolls back, sending no ``DISCARD ALL``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter, methodcaller
from typing import Any
from weakref import ref

from .._lease import Lease, close_tracked, forward, set_made
from .._redact import scrub
from .base import (
    BROKEN,
    BUSY,
    CLEAN,
    IN_TRANSACTION,
    SyncAdapter,
    conninfo_complaint,
    rejected_for_good,
    reported_standby,
    with_connect_timeout,
)

try:
    import psycopg2
    import psycopg2.extensions as ext
except ImportError:  # pragma: no cover - checked by adapters.resolve
    psycopg2 = None

__all__ = ["Psycopg2Adapter", "Psycopg2Lease"]

_FACTORIES = frozenset({"connection_factory", "cursor_factory"})

_STATUS = (
    {
        ext.TRANSACTION_STATUS_IDLE: CLEAN,
        ext.TRANSACTION_STATUS_INTRANS: IN_TRANSACTION,
        ext.TRANSACTION_STATUS_INERROR: IN_TRANSACTION,
        ext.TRANSACTION_STATUS_ACTIVE: BUSY,
        ext.TRANSACTION_STATUS_UNKNOWN: BROKEN,
    }
    if psycopg2 is not None
    else {}
)
if psycopg2 is not None and ext.TRANSACTION_STATUS_IDLE != CLEAN:  # pragma: no cover
    raise RuntimeError("libpq's IDLE transaction status is not 0")


# libpq's own transaction status, without a Python frame: IDLE (0) is CLEAN.
_libpq_status: Callable[[Any], int] = methodcaller("get_transaction_status")


def _status(conn: Any) -> int:
    # A closed connection reports TRANSACTION_STATUS_UNKNOWN: BROKEN.
    return _STATUS.get(conn.get_transaction_status(), BROKEN)


# ``conn.closed`` without a Python frame: checked on every checkout.
_closed: Callable[[Any], bool] = attrgetter("closed")


def _dsn_problem(dsn: str, params: Mapping[str, Any]) -> str | None:
    try:
        ext.make_dsn(dsn, **params)
    except psycopg2.ProgrammingError as exc:
        return str(exc).strip().removeprefix("invalid dsn: ")
    return None


# What psycopg2 keeps on the connection object and a borrower may assign.
_KEPT = ("autocommit", "isolation_level", "readonly", "deferrable", "cursor_factory")
_KEPT_NAMES = frozenset(_KEPT)
# All of them as one tuple, read with no Python frame.
_kept_of: Callable[[Any], tuple[Any, ...]] = attrgetter(*_KEPT)


_shut = methodcaller("close")  # an unnamed cursor's close() does no IO


def _keep_attributes(lease: Lease) -> None:
    # Only the first change's "before" is kept: what the lease started with.
    undo = lease._undo
    if undo is None or not any(item[0] == "attributes" for item in undo):
        lease._note(("attributes", _kept_of(lease._con)))


class Psycopg2Lease(Lease):
    """Lease of a psycopg2 connection.

    Notes the connection attributes a borrower changes and the ``withhold``
    cursors it opens, for the release to undo, and keeps track of its other
    cursors, for the release to close.
    """

    __slots__ = ()

    @staticmethod
    def _void(con: Any, made: Any) -> None:
        if made:  # empty when every cursor was dropped already, the common case
            close_tracked(made, _shut)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _KEPT_NAMES:
            _keep_attributes(self)
        Lease.__setattr__(self, name, value)

    def set_session(self, *args: Any, **kwargs: Any) -> None:
        _keep_attributes(self)
        self._con.set_session(*args, **kwargs)

    def set_isolation_level(self, level: Any) -> None:
        _keep_attributes(self)
        self._con.set_isolation_level(level)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cur = self._con.cursor(*args, **kwargs)
        if cur.name is None:
            # track(), inline: with psycopg2 every query needs a cursor.
            made = self._made
            if made is None:
                made = set()
                set_made(self, made)
            made.add(ref(cur, made.discard))
        elif cur.withhold:
            self._note(("cursor", cur))
        return cur


forward(Psycopg2Lease, "commit", "rollback")


def _or_default(value: Any) -> Any:
    # set_session() reads None as "leave it", and "DEFAULT" as "the server's".
    return "DEFAULT" if value is None else value


class Psycopg2Adapter(SyncAdapter):
    """psycopg2 connections for the thread :class:`~pgmarina.Pool`."""

    name = "psycopg2"
    lease_class = Psycopg2Lease
    transactional_context = True
    status = staticmethod(_status)
    quick_status = staticmethod(_libpq_status)  # type: ignore[assignment]  # a C call

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        # As psycopg's adapter does: libpq's complaint is scrubbed (it may
        # quote a password) and the error raised without it as its context.
        params = {k: v for k, v in kwargs.items() if k not in _FACTORIES}
        problem = _dsn_problem(dsn or "", {})
        if problem is not None:
            raise ValueError(f"dsn is not a valid connection string: {scrub(problem, dsn, kwargs)}")
        problem = _dsn_problem(dsn or "", params)
        if problem is not None:
            raise TypeError(f"connect keywords rejected by libpq: {scrub(problem, dsn, kwargs)}")

    def connect(self, dsn: str | None, kwargs: Mapping[str, Any], timeout: float) -> Any:
        try:
            return psycopg2.connect(dsn or "", **with_connect_timeout(dsn, kwargs, timeout))
        except psycopg2.OperationalError as exc:
            problem = conninfo_complaint(str(exc), dsn, kwargs)
            if problem is None:
                raise
        raise ValueError(f"libpq cannot use the connection string: {problem}")

    is_closed = staticmethod(_closed)  # type: ignore[assignment]  # a C getter, no frame

    def terminate(self, conn: Any) -> None:
        conn.close()

    def is_permanent(self, exc: BaseException) -> bool:
        # libpq reports a failed login with the server's message; pgcode is None.
        return isinstance(exc, psycopg2.OperationalError) and rejected_for_good(
            exc.pgcode, str(exc)
        )

    def close(self, conn: Any) -> None:
        conn.close()

    def socket_of(self, conn: Any) -> int:
        return int(conn.fileno())

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def _in_autocommit(self, conn: Any, query: str) -> None:
        was = conn.autocommit
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(query)
        finally:
            if not conn.closed:
                conn.autocommit = was

    def full_reset(self, conn: Any) -> None:
        if _status(conn) == IN_TRANSACTION:
            conn.rollback()
        if not self.pgbouncer:  # behind PgBouncer the session is not ours to reset
            self._in_autocommit(conn, "DISCARD ALL")

    def listen(self, conn: Any, channel: str) -> None:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("LISTEN " + ext.quote_ident(channel, conn))

    def unlisten(self, conn: Any, channel: str) -> None:
        with conn.cursor() as cur:
            cur.execute("UNLISTEN " + ext.quote_ident(channel, conn))

    def drain_notifications(self, conn: Any, deliver: Callable[[str, str, int], None]) -> None:
        conn.poll()  # reads what the socket holds; raises if the server is gone
        notes = conn.notifies
        while notes:
            note = notes.pop(0)
            deliver(note.channel, note.payload, note.pid)

    def ping(self, conn: Any) -> None:
        self._in_autocommit(conn, "SELECT 1")

    def in_recovery(self, conn: Any) -> bool:
        standby = reported_standby(conn.get_parameter_status("in_hot_standby"))
        if standby is None:  # before PostgreSQL 14
            was = conn.autocommit
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery()")
                    standby = bool(cur.fetchone()[0])
            finally:
                if not conn.closed:
                    conn.autocommit = was
        return standby

    def end_block(self, conn: Any, failed: bool) -> None:
        if _status(conn) == IN_TRANSACTION and not conn.autocommit:
            (conn.rollback if failed else conn.commit)()

    def undo(self, conn: Any, undo: list[Any]) -> None:
        # After the pool's rollback; a connection still in a transaction here
        # (reset=None) is discarded, and psycopg2 would refuse set_session.
        if _status(conn) != CLEAN:
            return
        for item in reversed(undo):
            kind = item[0]
            if kind == "cursor":
                item[1].close()  # WITH HOLD: CLOSE on the server
            elif kind == "attributes":
                autocommit, isolation_level, readonly, deferrable, cursor_factory = item[1]
                if conn.cursor_factory is not cursor_factory:
                    conn.cursor_factory = cursor_factory
                if _kept_of(conn)[:4] == item[1][:4]:
                    continue
                # All four in one call: in autocommit psycopg2 keeps the
                # characteristics as server settings, and toggling autocommit
                # alone does not bring those back.
                conn.set_session(
                    isolation_level=_or_default(isolation_level),
                    readonly=_or_default(readonly),
                    deferrable=_or_default(deferrable),
                    autocommit=autocommit,
                )
