"""psycopg2 adapter, for ``Pool(driver="psycopg2")``.

psycopg2's own pools have no timeouts, health checks or lifetimes; this
adapter gives psycopg2 code all of pgmarina's.  The transaction status is
read locally with ``get_transaction_status()``; ``pool.connection()`` commits
on success and rolls back on error (unless autocommit), like psycopg 3's.
Keywords ``connection_factory`` and ``cursor_factory`` go to
``psycopg2.connect``; the others are libpq parameters, checked up front.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter, methodcaller
from typing import Any

from .._lease import Lease, forward
from .base import (
    BROKEN,
    BUSY,
    CLEAN,
    IN_TRANSACTION,
    SyncAdapter,
    rejected_for_good,
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


class Psycopg2Lease(Lease):
    """Lease of a psycopg2 connection."""

    __slots__ = ()


forward(Psycopg2Lease, "cursor", "commit", "rollback")


class Psycopg2Adapter(SyncAdapter):
    """psycopg2 connections for the thread :class:`~pgmarina.Pool`."""

    name = "psycopg2"
    lease_class = Psycopg2Lease
    transactional_context = True
    status = staticmethod(_status)
    quick_status = staticmethod(_libpq_status)  # type: ignore[assignment]  # a C call

    def validate(self, dsn: str | None, kwargs: Mapping[str, Any]) -> None:
        params = {k: v for k, v in kwargs.items() if k not in _FACTORIES}
        try:
            ext.make_dsn(dsn or "", **params)
        except psycopg2.ProgrammingError as exc:
            raise TypeError(f"connect keywords rejected by libpq: {exc}") from None

    def connect(self, dsn: str | None, kwargs: Mapping[str, Any], timeout: float) -> Any:
        return psycopg2.connect(dsn or "", **with_connect_timeout(dsn, kwargs, timeout))

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
        self._in_autocommit(conn, "DISCARD ALL")

    def ping(self, conn: Any) -> None:
        self._in_autocommit(conn, "SELECT 1")

    def end_block(self, conn: Any, failed: bool) -> None:
        if _status(conn) == IN_TRANSACTION and not conn.autocommit:
            (conn.rollback if failed else conn.commit)()
